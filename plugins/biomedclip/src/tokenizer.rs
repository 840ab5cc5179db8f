//! BiomedCLIP's text tokenizer: open_clip's `HFTokenizer` in front of
//! PubMedBERT's uncased WordPiece vocabulary (`vocab.txt`, published with
//! the model).
//!
//! `tokenizer(texts)` in open_clip does, and so does
//! [`WordPieceTokenizer::tokenize`]:
//!
//! 1. open_clip's `whitespace` clean: `ftfy.fix_text`, `html.unescape`
//!    twice, strip, whitespace runs to one space (the functions of
//!    [`clisc_clip::tokenizer`], which CLIP's tokenizer uses too).
//! 2. `transformers`' `BertTokenizer` (backed by the `tokenizers` library):
//!    * the special tokens `[PAD] [UNK] [CLS] [SEP] [MASK]` written in the
//!      text are taken as they are, before any normalisation;
//!    * `BertNormalizer`: drop NUL, U+FFFD and control characters (general
//!      category C, except tab and line breaks), every whitespace
//!      character to a space, spaces around CJK ideographs, NFD without
//!      non-spacing marks (accents), lowercase (per character);
//!    * `BertPreTokenizer`: split at whitespace, each punctuation
//!      character (ASCII punctuation or category P) a word of its own;
//!    * WordPiece: longest vocabulary prefix first, continuation pieces
//!      prefixed with `##`; a word with a character that no piece covers,
//!      or longer than 100 characters, is one `[UNK]`.
//! 3. `[CLS]` + at most `context - 2` ids + `[SEP]`, padded with `[PAD]`
//!    to the context length (256 for BiomedCLIP): longer texts are cut,
//!    as `truncation=True` does.
//!
//! The vocabulary is read as `transformers` reads `vocab.txt`: one token
//! per line (`\n`, `\r\n` or `\r`), its id the line number.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use clisc_clip::tokenizer::{basic_clean, whitespace_clean};
use clisc_sdk::PluginError;
use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// BiomedCLIP's text context (`text_cfg.context_length` of its
/// `open_clip_config.json`).
pub const CONTEXT_LENGTH: usize = 256;

/// `tokenizers`' WordPiece default: longer words become `[UNK]`.
const MAX_INPUT_CHARS_PER_WORD: usize = 100;

/// The special tokens `BertTokenizer` registers, which it matches in the
/// raw text.
const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// A BERT WordPiece tokenizer over a `vocab.txt`.
#[derive(Debug, Clone)]
pub struct WordPieceTokenizer {
    vocab: HashMap<String, i64>,
    /// Number of lines of the file (the ids run below it).
    lines: usize,
    /// `[PAD] [UNK] [CLS] [SEP] [MASK]` with their ids.
    specials: [(&'static str, i64); 5],
}

/// Unicode character classes `tokenizers` tests, as anchored regexes.
struct Classes {
    other: Regex,
    punctuation: Regex,
    nonspacing_mark: Regex,
}

fn classes() -> &'static Classes {
    static CLASSES: OnceLock<Classes> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("built-in pattern {p}: {e}"));
        Classes {
            other: re(r"^\p{C}$"),
            punctuation: re(r"^\p{P}$"),
            nonspacing_mark: re(r"^\p{Mn}$"),
        }
    })
}

fn is_in(class: &Regex, c: char) -> bool {
    let mut buf = [0u8; 4];
    class.is_match(c.encode_utf8(&mut buf))
}

/// `tokenizers`' `is_control`: category C, except tab and line breaks.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && is_in(&classes().other, c)
}

/// `tokenizers`' `is_whitespace`: Rust's `char::is_whitespace`, which
/// includes tab and line breaks.
fn is_whitespace(c: char) -> bool {
    c.is_whitespace()
}

/// `tokenizers`' `is_bert_punc`.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || is_in(&classes().punctuation, c)
}

/// `tokenizers`' `is_chinese_char` (its ranges, which differ from the
/// Python `BasicTokenizer`'s in one block: 0x2B920, not 0x2B820).
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// `BertNormalizer(clean_text, handle_chinese_chars, strip_accents,
/// lowercase)` as BiomedCLIP's tokenizer configures it (all on).
fn normalize(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            cleaned.push(' ');
        } else if is_chinese_char(c) {
            cleaned.push(' ');
            cleaned.push(c);
            cleaned.push(' ');
        } else {
            cleaned.push(c);
        }
    }
    let marks = &classes().nonspacing_mark;
    cleaned
        .nfd()
        .filter(|&c| !is_in(marks, c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// `BertPreTokenizer`: whitespace removed, punctuation isolated.
fn pre_tokenize(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for chunk in text.split(is_whitespace).filter(|s| !s.is_empty()) {
        let mut start = 0;
        for (i, c) in chunk.char_indices() {
            if is_punctuation(c) {
                if start < i {
                    words.push(&chunk[start..i]);
                }
                words.push(&chunk[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        if start < chunk.len() {
            words.push(&chunk[start..]);
        }
    }
    words
}

/// The lines of a vocabulary file as Python's text mode reads them
/// (universal newlines), without their line ends.
fn vocab_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

impl WordPieceTokenizer {
    /// Reads `vocab.txt`; errors name the file.
    pub fn from_file(path: &Path) -> Result<WordPieceTokenizer, PluginError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PluginError::weights(format!(
                "cannot read the WordPiece vocabulary `{}`: {e}",
                path.display()
            ))
        })?;
        Self::from_vocab(&text, &path.display().to_string())
    }

    /// Builds the tokenizer from the text of a `vocab.txt`; `source` names
    /// it in errors.
    pub(crate) fn from_vocab(text: &str, source: &str) -> Result<WordPieceTokenizer, PluginError> {
        let lines = vocab_lines(text);
        let vocab: HashMap<String, i64> = lines
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as i64))
            .collect();
        let missing: Vec<&str> = SPECIAL_TOKENS
            .iter()
            .copied()
            .filter(|t| !vocab.contains_key(*t))
            .collect();
        if !missing.is_empty() {
            return Err(PluginError::weights(format!(
                "`{source}` is not a BERT WordPiece vocabulary (one token per line with {}): it lacks {}",
                SPECIAL_TOKENS.join(" "),
                missing.join(" ")
            )));
        }
        let specials = SPECIAL_TOKENS.map(|t| (t, vocab[t]));
        Ok(WordPieceTokenizer {
            vocab,
            lines: lines.len(),
            specials,
        })
    }

    /// Lines of the vocabulary file: ids are below this.
    pub fn vocab_size(&self) -> usize {
        self.lines
    }

    fn special(&self, token: &str) -> i64 {
        self.specials
            .iter()
            .find(|(t, _)| *t == token)
            .map(|&(_, id)| id)
            .unwrap_or_default()
    }

    /// Id of `[PAD]`.
    pub(crate) fn pad_id(&self) -> i64 {
        self.special("[PAD]")
    }

    /// Id of `[UNK]`.
    pub(crate) fn unk_id(&self) -> i64 {
        self.special("[UNK]")
    }

    /// Id of `[CLS]`.
    pub(crate) fn cls_id(&self) -> i64 {
        self.special("[CLS]")
    }

    /// Id of `[SEP]`.
    pub(crate) fn sep_id(&self) -> i64 {
        self.special("[SEP]")
    }

    /// WordPiece of one pre-tokenized word, appended to `out`.
    fn word_piece(&self, word: &str, out: &mut Vec<i64>) {
        if word.chars().count() > MAX_INPUT_CHARS_PER_WORD {
            out.push(self.unk_id());
            return;
        }
        let first = out.len();
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                let piece = &word[start..end];
                let id = if start > 0 {
                    self.vocab.get(&format!("##{piece}"))
                } else {
                    self.vocab.get(piece)
                };
                if let Some(&id) = id {
                    found = Some(id);
                    break;
                }
                end -= piece.chars().next_back().map_or(1, char::len_utf8);
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(first);
                    out.push(self.unk_id());
                    return;
                }
            }
        }
    }

    /// Ids of `text` without `[CLS]`, `[SEP]` and padding (steps 1 and 2
    /// of the module docs).
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let cleaned = whitespace_clean(&basic_clean(text));
        let mut ids = Vec::new();
        let mut rest = cleaned.as_str();
        loop {
            // The leftmost special token (none is a prefix of another).
            let next = self
                .specials
                .iter()
                .filter_map(|&(t, id)| rest.find(t).map(|at| (at, t, id)))
                .min_by_key(|&(at, _, _)| at);
            let (plain, special) = match next {
                Some((at, t, id)) => (&rest[..at], Some((t, id))),
                None => (rest, None),
            };
            let normalized = normalize(plain);
            for word in pre_tokenize(&normalized) {
                self.word_piece(word, &mut ids);
            }
            match special {
                Some((t, id)) => {
                    ids.push(id);
                    rest = &rest[plain.len() + t.len()..];
                }
                None => break,
            }
        }
        ids
    }

    /// The padded id row open_clip's tokenizer gives for `text`:
    /// `[CLS]`, at most `context_length - 2` ids, `[SEP]`, `[PAD]`s.
    pub fn tokenize(&self, text: &str, context_length: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(context_length);
        ids.push(self.cls_id());
        let body = self.encode(text);
        ids.extend(body.iter().take(context_length.saturating_sub(2)));
        ids.push(self.sep_id());
        ids.resize(context_length.max(ids.len()), self.pad_id());
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> WordPieceTokenizer {
        let vocab = [
            "[PAD]",
            "[unused0]",
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "[MASK]",
            "brain",
            "tumor",
            "un",
            "##aff",
            "##ected",
            "a",
            "##b",
            "cafe",
            ",",
            "!",
            "日",
            "本",
            "x",
            "##x",
        ];
        WordPieceTokenizer::from_vocab(&vocab.join("\n"), "tiny").unwrap()
    }

    #[test]
    fn word_pieces_specials_and_unknowns() {
        let t = tiny();
        // un ##aff ##ected; "q" has no piece; punctuation split; accents stripped.
        assert_eq!(
            t.encode("Unaffected brain, q!"),
            vec![8, 9, 10, 6, 14, 2, 15]
        );
        assert_eq!(t.encode("Café aB"), vec![13, 11, 12]);
        // Special tokens are taken before normalisation, only as written.
        assert_eq!(t.encode("[MASK]brain [mask]"), vec![5, 6, 2, 2, 2]);
        // CJK ideographs are words of their own; control characters vanish.
        assert_eq!(t.encode("日本\u{7}x\u{200b}"), vec![16, 17, 18]);
        // At most 100 characters a word.
        let mut hundred = vec![18];
        hundred.extend([19; 99]);
        assert_eq!(t.encode(&"x".repeat(100)), hundred);
        assert_eq!(t.encode(&"x".repeat(101)), vec![2]);
    }

    #[test]
    fn rows_are_framed_padded_and_truncated() {
        let t = tiny();
        assert_eq!(t.tokenize("brain tumor", 6), vec![3, 6, 7, 4, 0, 0]);
        assert_eq!(t.tokenize("brain tumor brain tumor", 4), vec![3, 6, 7, 4]);
        assert_eq!(t.tokenize("", 3), vec![3, 4, 0]);
    }

    #[test]
    fn vocabulary_lines_and_errors() {
        assert_eq!(vocab_lines("a\r\nb\rc\n\nd"), vec!["a", "b", "c", "", "d"]);
        let err = WordPieceTokenizer::from_vocab("[PAD]\n[UNK]\nhello\n", "v.txt").unwrap_err();
        assert!(
            err.message.contains("`v.txt`") && err.message.contains("lacks [CLS] [SEP] [MASK]"),
            "{}",
            err.message
        );
        let err = WordPieceTokenizer::from_file(Path::new("/no/such/vocab.txt")).unwrap_err();
        assert!(
            err.message.contains("/no/such/vocab.txt"),
            "{}",
            err.message
        );
    }
}
