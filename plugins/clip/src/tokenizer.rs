//! CLIP's byte-level BPE tokenizer, ported from OpenAI's
//! `simple_tokenizer.py` with the official vocabulary
//! (`assets/bpe_simple_vocab_16e6.txt.gz`, MIT, embedded in the binary).
//!
//! `clip.tokenize(text)` does, and so does [`ClipTokenizer::tokenize`]:
//!
//! 1. `ftfy.fix_text` (ftfy 6 defaults), split at line breaks, each segment
//!    fixed until stable: HTML entities (only while no segment so far
//!    contained `<`), C1 controls as Windows-1252, Latin ligatures,
//!    full/half-width forms, curly quotes, line breaks, ANSI escapes,
//!    control characters, NFC. **Not ported:** ftfy's mojibake repair
//!    (`fix_encoding`, a statistical detector of mis-decoded UTF-8 such as
//!    `"Ã©"` for `"é"`): such text is tokenized as written.
//! 2. `html.unescape` twice (Python's algorithm and HTML5 tables, see
//!    `html_tables.rs`), strip.
//! 3. Whitespace runs to one space, strip, lowercase (full Unicode case
//!    mapping, as Python's `str.lower`).
//! 4. The split pattern `<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`.
//! 5. Each piece: UTF-8 bytes mapped to printable characters, `</w>`
//!    appended to the last symbol, then the BPE merges in rank order.
//! 6. `<|startoftext|>` + ids + `<|endoftext|>`, zero-padded to the
//!    context length (77). Longer texts are an error, or with
//!    `truncate = true` are cut to 77 with the last id replaced by
//!    `<|endoftext|>` (the reference's policy).

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use clisc_sdk::PluginError;
use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::html_tables::{HTML5_ENTITIES, INVALID_CHARREFS, INVALID_CODEPOINTS};

/// The official merges file, gzipped (MIT licence, see `assets/`).
static VOCAB_GZ: &[u8] = include_bytes!("../assets/bpe_simple_vocab_16e6.txt.gz");

/// Context length of every released CLIP model.
pub const CONTEXT_LENGTH: usize = 77;

/// The tokenizer: byte encoder, vocabulary and merge ranks.
pub struct ClipTokenizer {
    byte_encoder: [char; 256],
    encoder: HashMap<String, i64>,
    ranks: HashMap<(String, String), usize>,
    split: Regex,
    sot: i64,
    eot: i64,
}

/// The reversible byte -> printable character table of GPT-2/CLIP: the
/// printable Latin-1 bytes map to themselves, the others to U+0100 + n.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u32| {
        (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
    };
    let mut table = ['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(256 + n - 1).unwrap_or('\0')
        };
    }
    table
}

impl ClipTokenizer {
    /// The shared tokenizer built from the embedded vocabulary (built once).
    pub fn shared() -> Result<&'static ClipTokenizer, PluginError> {
        static TOKENIZER: OnceLock<Result<ClipTokenizer, PluginError>> = OnceLock::new();
        TOKENIZER
            .get_or_init(ClipTokenizer::from_embedded)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn from_embedded() -> Result<ClipTokenizer, PluginError> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(VOCAB_GZ)
            .read_to_string(&mut text)
            .map_err(|e| {
                PluginError::internal(format!("embedded CLIP vocabulary unreadable: {e}"))
            })?;
        Self::from_merges(&text)
    }

    /// Builds the tokenizer from the text of `bpe_simple_vocab_16e6.txt`
    /// (first line a header, then one merge `a b` per line; the first
    /// 49152 - 256 - 2 merges are used, as in the reference).
    pub(crate) fn from_merges(text: &str) -> Result<ClipTokenizer, PluginError> {
        let merges: Vec<(String, String)> = text
            .split('\n')
            .skip(1)
            .take(49152 - 256 - 2)
            .map(|line| {
                let mut parts = line.split_whitespace();
                match (parts.next(), parts.next()) {
                    (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                    _ => Err(PluginError::internal(format!(
                        "malformed BPE merge line `{line}`"
                    ))),
                }
            })
            .collect::<Result<_, _>>()?;
        let byte_encoder = bytes_to_unicode();
        // The reference lists the byte characters in its table's insertion
        // order: printable bytes first (ascending), then the others.
        let mut order: Vec<char> = byte_encoder.to_vec();
        order.sort_by_key(|&c| c as u32);
        let mut vocab: Vec<String> = order.iter().map(|c| c.to_string()).collect();
        vocab.extend(order.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<|startoftext|>".into());
        vocab.push("<|endoftext|>".into());
        let encoder: HashMap<String, i64> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v, i as i64))
            .collect();
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        let split = Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .map_err(|e| PluginError::internal(e.to_string()))?;
        let sot = encoder["<|startoftext|>"];
        let eot = encoder["<|endoftext|>"];
        Ok(ClipTokenizer {
            byte_encoder,
            encoder,
            ranks,
            split,
            sot,
            eot,
        })
    }

    /// Vocabulary size (49408 for the official file).
    pub fn vocab_size(&self) -> usize {
        self.encoder.len()
    }

    /// Id of `<|startoftext|>`.
    #[cfg(test)]
    fn sot(&self) -> i64 {
        self.sot
    }

    /// Id of `<|endoftext|>` (the largest id, which is why CLIP pools the
    /// text at the argmax of the ids).
    #[cfg(test)]
    fn eot(&self) -> i64 {
        self.eot
    }

    /// BPE of one pre-token already mapped to byte characters.
    fn bpe(&self, token: &str) -> Vec<String> {
        let chars: Vec<char> = token.chars().collect();
        if chars.is_empty() {
            return Vec::new();
        }
        let mut word: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        if word.len() == 1 {
            return word;
        }
        loop {
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&r| (r, w[0].clone(), w[1].clone()))
                })
                .min_by_key(|(r, _, _)| *r);
            let Some((_, first, second)) = best else {
                break;
            };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
            if word.len() == 1 {
                break;
            }
        }
        word
    }

    /// Token ids of `text` without `<|startoftext|>`/`<|endoftext|>`
    /// (the reference's `SimpleTokenizer.encode`).
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let cleaned = whitespace_clean(&basic_clean(text)).to_lowercase();
        let mut ids = Vec::new();
        for piece in self.split.find_iter(&cleaned) {
            let piece = piece.as_str();
            if piece == "<|startoftext|>" || piece == "<|endoftext|>" {
                ids.push(self.encoder[piece]);
                continue;
            }
            let mapped: String = piece
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            for sub in self.bpe(&mapped) {
                if let Some(&id) = self.encoder.get(&sub) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// `clip.tokenize([text], context_length, truncate)[0]`: the padded id
    /// row. Without `truncate`, a text longer than the context is an error
    /// naming it.
    pub fn tokenize(
        &self,
        text: &str,
        context_length: usize,
        truncate: bool,
    ) -> Result<Vec<i64>, PluginError> {
        let mut ids = Vec::with_capacity(context_length);
        ids.push(self.sot);
        ids.extend(self.encode(text));
        ids.push(self.eot);
        if ids.len() > context_length {
            if !truncate {
                return Err(PluginError::input(format!(
                    "text `{text}` is {} tokens long, more than CLIP's context of {context_length}",
                    ids.len()
                )));
            }
            ids.truncate(context_length);
            if let Some(last) = ids.last_mut() {
                *last = self.eot;
            }
        }
        ids.resize(context_length, 0);
        Ok(ids)
    }
}

/// Python's `html.unescape`.
pub(crate) fn html_unescape(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)")
            .unwrap_or_else(|_| unreachable_regex())
    });
    if !text.contains('&') {
        return text.to_string();
    }
    re.replace_all(text, |caps: &regex::Captures| replace_charref(&caps[1]))
        .into_owned()
}

fn unreachable_regex() -> Regex {
    // The literal patterns above are valid; this keeps the code panic-free.
    Regex::new("$^").expect("trivial regex")
}

fn entities() -> &'static HashMap<&'static str, &'static str> {
    static MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| HTML5_ENTITIES.iter().copied().collect())
}

fn replace_charref(s: &str) -> String {
    if let Some(num) = s.strip_prefix('#') {
        let digits = num.trim_end_matches(';');
        let value = if let Some(hex) = digits.strip_prefix(['x', 'X']) {
            u64::from_str_radix(hex, 16).unwrap_or(u64::MAX)
        } else {
            digits.parse::<u64>().unwrap_or(u64::MAX)
        };
        if let Some((_, rep)) = INVALID_CHARREFS.iter().find(|(k, _)| *k as u64 == value) {
            return rep.to_string();
        }
        if (0xD800..=0xDFFF).contains(&value) || value > 0x10FFFF {
            return "\u{FFFD}".to_string();
        }
        if INVALID_CODEPOINTS.iter().any(|&c| c as u64 == value) {
            return String::new();
        }
        return char::from_u32(value as u32)
            .map(String::from)
            .unwrap_or_else(|| "\u{FFFD}".into());
    }
    let map = entities();
    if let Some(v) = map.get(s) {
        return v.to_string();
    }
    // Longest entity name that is a prefix (at least 2 characters), as Python does.
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).skip(2).collect();
    for &end in bounds.iter().rev() {
        if let Some(v) = map.get(&s[..end]) {
            return format!("{v}{}", &s[end..]);
        }
    }
    format!("&{s}")
}

/// ftfy's entity table: HTML5 names ending in `;`, plus upper-cased
/// variants of lower-case names when the upper-case form means nothing.
fn ftfy_entities() -> &'static HashMap<String, String> {
    static MAP: OnceLock<HashMap<String, String>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for &(name, value) in HTML5_ENTITIES {
            if !name.ends_with(';') {
                continue;
            }
            map.insert(format!("&{name}"), value.to_string());
            if name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if html_unescape(&upper) == upper {
                    map.insert(upper, value.to_uppercase());
                }
            }
        }
        map
    })
}

/// ftfy's `unescape_html`: `&name;` and complete numeric references.
fn ftfy_unescape_html(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"&#?[0-9A-Za-z]{1,24};").unwrap_or_else(|_| unreachable_regex())
    });
    re.replace_all(text, |caps: &regex::Captures| {
        let m = &caps[0];
        if let Some(v) = ftfy_entities().get(m) {
            return v.clone();
        }
        if m.starts_with("&#") {
            let un = html_unescape(m);
            if un.contains(';') {
                return m.to_string();
            }
            return un;
        }
        m.to_string()
    })
    .into_owned()
}

fn ftfy_segment(segment: &str, unescape: bool) -> String {
    static ANSI: OnceLock<Regex> = OnceLock::new();
    let ansi = ANSI.get_or_init(|| {
        Regex::new(r"\x1b\[((?:\d|;)*)([a-zA-Z])").unwrap_or_else(|_| unreachable_regex())
    });
    let mut text = segment.to_string();
    loop {
        let orig = text.clone();
        if unescape {
            text = ftfy_unescape_html(&text);
        }
        // fix_c1_controls: U+0080..U+009F read as Windows-1252.
        text = text
            .chars()
            .map(|c| {
                let u = c as u32;
                if (0x80..=0x9f).contains(&u) {
                    INVALID_CHARREFS
                        .iter()
                        .find(|(k, _)| *k == u)
                        .map(|(_, r)| r.to_string())
                        .unwrap_or_else(|| c.to_string())
                } else {
                    c.to_string()
                }
            })
            .collect();
        // fix_latin_ligatures, fix_character_width, uncurl_quotes, control chars.
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            let u = c as u32;
            match u {
                0x132 => out.push_str("IJ"),
                0x133 => out.push_str("ij"),
                0x149 => out.push_str("\u{2bc}n"),
                0x1c4 => out.push_str("D\u{17d}"),
                0x1c5 => out.push_str("D\u{17e}"),
                0x1c6 => out.push_str("d\u{17e}"),
                0x1c7 => out.push_str("LJ"),
                0x1c8 => out.push_str("Lj"),
                0x1c9 => out.push_str("lj"),
                0x1ca => out.push_str("NJ"),
                0x1cb => out.push_str("Nj"),
                0x1cc => out.push_str("nj"),
                0x1f1 => out.push_str("DZ"),
                0x1f2 => out.push_str("Dz"),
                0x1f3 => out.push_str("dz"),
                0xfb00 => out.push_str("ff"),
                0xfb01 => out.push_str("fi"),
                0xfb02 => out.push_str("fl"),
                0xfb03 => out.push_str("ffi"),
                0xfb04 => out.push_str("ffl"),
                0xfb05 => out.push_str("\u{17f}t"),
                0xfb06 => out.push_str("st"),
                0x3000 => out.push(' '),
                0xff01..=0xffef => {
                    let alt: String = std::iter::once(c).nfkc().collect();
                    out.push_str(&alt);
                }
                _ => out.push(c),
            }
        }
        // The width map is applied before quotes are uncurled, as in ftfy.
        text = out
            .chars()
            .map(|c| match c as u32 {
                0x2bc | 0x2018..=0x201b => '\'',
                0x201c..=0x201f => '"',
                _ => c,
            })
            .collect();
        // fix_line_breaks
        text = text
            .replace("\r\n", "\n")
            .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
        // remove_terminal_escapes
        text = ansi.replace_all(&text, "").into_owned();
        // remove_control_chars
        text.retain(|c| {
            let u = c as u32;
            !(u <= 0x08
                || u == 0x0b
                || (0x0e..0x20).contains(&u)
                || u == 0x7f
                || (0x206a..0x2070).contains(&u)
                || u == 0xfeff
                || (0xfff9..0xfffd).contains(&u))
        });
        text = text.nfc().collect();
        if text == orig {
            return text;
        }
    }
}

/// The ported part of `ftfy.fix_text` (see the module docs).
pub fn fix_text(text: &str) -> String {
    let mut unescape = true;
    let mut out = String::with_capacity(text.len());
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape = false;
        }
        out.push_str(&ftfy_segment(segment, unescape));
    }
    out
}

/// Python `str.strip()` (Unicode whitespace, plus the separators U+001C..U+001F).
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// The reference's `basic_clean`: ftfy, `html.unescape` twice, strip.
pub fn basic_clean(text: &str) -> String {
    let fixed = fix_text(text);
    py_strip(&html_unescape(&html_unescape(&fixed))).to_string()
}

/// The reference's `whitespace_clean`: whitespace runs to one space, strip.
pub fn whitespace_clean(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"\s+").unwrap_or_else(|_| unreachable_regex()));
    py_strip(&re.replace_all(text, " ")).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_and_special_tokens() {
        let tok = ClipTokenizer::shared().unwrap();
        assert_eq!(tok.vocab_size(), 49408);
        assert_eq!(tok.sot(), 49406);
        assert_eq!(tok.eot(), 49407);
    }

    #[test]
    fn known_ids() {
        // clip.tokenize("a diagram") == [49406, 320, 22697, 49407, 0, ...]
        let tok = ClipTokenizer::shared().unwrap();
        let ids = tok.tokenize("a diagram", CONTEXT_LENGTH, false).unwrap();
        assert_eq!(&ids[..5], &[49406, 320, 22697, 49407, 0]);
        assert_eq!(ids.len(), 77);
    }

    #[test]
    fn truncation_policy() {
        let tok = ClipTokenizer::shared().unwrap();
        let long = "tumor ".repeat(100);
        assert!(tok
            .tokenize(&long, CONTEXT_LENGTH, false)
            .unwrap_err()
            .message
            .contains("context of 77"));
        let ids = tok.tokenize(&long, CONTEXT_LENGTH, true).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[76], tok.eot());
    }

    #[test]
    fn html_unescape_matches_python_rules() {
        assert_eq!(html_unescape("&amp;&lt;x&gt;"), "&<x>");
        assert_eq!(
            html_unescape("&ampx &notit; &#x41;&#66 &#0; &#128;"),
            "&x ¬it; AB \u{fffd} €"
        );
        assert_eq!(html_unescape("&bogus; &#xD800;"), "&bogus; \u{fffd}");
    }

    #[test]
    fn ftfy_subset() {
        assert_eq!(
            fix_text("“curly” ‘quotes’ ﬁne ＡＢＣ\u{3000}x"),
            "\"curly\" 'quotes' fine ABC x"
        );
        assert_eq!(fix_text("a&eacute;b"), "aéb");
        assert_eq!(fix_text("<b>&eacute;</b>"), "<b>&eacute;</b>");
        assert_eq!(fix_text("e\u{301}\u{7}"), "é");
    }
}
