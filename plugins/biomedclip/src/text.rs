//! BiomedCLIP's text tower: open_clip's `HFTextEncoder` around
//! `transformers`' `BertModel` (PubMedBERT, BERT-base uncased, no pooler
//! layer), under the state-dict names `text.transformer.*` and
//! `text.proj.*`.
//!
//! `HFTextEncoder.forward(ids)`: the attention mask is `ids != 0` (the
//! BERT config's `pad_token_id`); BERT's embeddings are word + position
//! (0, 1, ...) + token type 0, then LayerNorm (eps 1e-12); each encoder
//! layer is post-norm: `LN(x + dense(attention(x)))`, then
//! `LN(h + dense(gelu(dense(h))))`, with exact-erf GELU and padded keys
//! masked out. The pooler (`cls_last_hidden_state_pooler`) takes the
//! `[CLS]` row of the last hidden state, and the `mlp` projection is
//! `Linear(768, 640) -> GELU -> Linear(640, 512)`, both without bias.
//!
//! Trailing padding is dropped before the encoder: padded positions are
//! masked as keys, so they change no other position and the `[CLS]` row is
//! the same as with the full 256-token row, at a fraction of the work.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::model::{layer_norm, linear, ZERO};

/// BERT's LayerNorm epsilon.
const EPS: f64 = 1e-12;

/// The id the attention mask treats as padding (`BertConfig.pad_token_id`).
const PAD_TOKEN_ID: i64 = 0;

/// Hyper-parameters of the text tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextConfig {
    /// Rows of the word embedding (30522 for PubMedBERT).
    pub vocab_size: i64,
    /// Hidden width (768).
    pub hidden: i64,
    /// Encoder layers (12).
    pub layers: i64,
    /// Attention heads (12; 64 channels each).
    pub heads: i64,
    /// Hidden width of the feed-forward blocks (3072).
    pub intermediate: i64,
    /// Rows of the position embedding (512).
    pub max_positions: i64,
    /// Rows of the token type embedding (2).
    pub type_vocab_size: i64,
    /// Hidden width of the `mlp` projection ((768 + 512) / 2 = 640).
    pub proj_hidden: i64,
}

/// `BertSelfAttention` + `BertSelfOutput`.
#[derive(Debug)]
struct Attention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    dense: nn::Linear,
    norm: nn::LayerNorm,
    heads: i64,
}

impl Attention {
    fn new(p: nn::Path, c: &TextConfig) -> Attention {
        let s = &p / "self";
        let o = &p / "output";
        Attention {
            query: linear(&s / "query", c.hidden, c.hidden, true),
            key: linear(&s / "key", c.hidden, c.hidden, true),
            value: linear(&s / "value", c.hidden, c.hidden, true),
            dense: linear(&o / "dense", c.hidden, c.hidden, true),
            norm: layer_norm(&o / "LayerNorm", c.hidden, EPS),
            heads: c.heads,
        }
    }

    /// `mask`: [batch, 1, 1, tokens], true where a key may be attended.
    fn forward(&self, x: &Tensor, mask: &Tensor) -> Tensor {
        let (b, l, d) = x.size3().unwrap_or((0, 0, 0));
        let heads = |t: Tensor| t.view([b, l, self.heads, d / self.heads]).transpose(1, 2);
        let q = heads(self.query.forward(x));
        let k = heads(self.key.forward(x));
        let v = heads(self.value.forward(x));
        let y =
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, false);
        let y = y.transpose(1, 2).contiguous().view([b, l, d]);
        self.norm.forward(&(self.dense.forward(&y) + x))
    }
}

/// `BertLayer`: attention, then `BertIntermediate` + `BertOutput`.
#[derive(Debug)]
struct Layer {
    attention: Attention,
    intermediate: nn::Linear,
    output: nn::Linear,
    norm: nn::LayerNorm,
}

impl Layer {
    fn new(p: nn::Path, c: &TextConfig) -> Layer {
        let o = &p / "output";
        Layer {
            attention: Attention::new(&p / "attention", c),
            intermediate: linear(
                &p / "intermediate" / "dense",
                c.hidden,
                c.intermediate,
                true,
            ),
            output: linear(&o / "dense", c.intermediate, c.hidden, true),
            norm: layer_norm(&o / "LayerNorm", c.hidden, EPS),
        }
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Tensor {
        let h = self.attention.forward(x, mask);
        let f = self.intermediate.forward(&h).gelu("none");
        self.norm.forward(&(self.output.forward(&f) + h))
    }
}

/// The text tower (`text`): BERT and open_clip's projection.
#[derive(Debug)]
pub(crate) struct TextTower {
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: nn::Embedding,
    embeddings_norm: nn::LayerNorm,
    layers: Vec<Layer>,
    proj_0: nn::Linear,
    proj_2: nn::Linear,
}

impl TextTower {
    /// Variables under `p` (= `text`), zero-initialised.
    pub(crate) fn new(p: nn::Path, c: &TextConfig, embed_dim: i64) -> TextTower {
        let bert = &p / "transformer";
        let e = &bert / "embeddings";
        let emb = |name: &str, rows: i64| {
            let cfg = nn::EmbeddingConfig {
                ws_init: ZERO,
                ..Default::default()
            };
            nn::embedding(&e / name, rows, c.hidden, cfg)
        };
        let layers = &bert / "encoder" / "layer";
        let proj = &p / "proj";
        TextTower {
            word_embeddings: emb("word_embeddings", c.vocab_size),
            position_embeddings: emb("position_embeddings", c.max_positions),
            token_type_embeddings: emb("token_type_embeddings", c.type_vocab_size),
            embeddings_norm: layer_norm(&e / "LayerNorm", c.hidden, EPS),
            layers: (0..c.layers).map(|i| Layer::new(&layers / i, c)).collect(),
            proj_0: linear(&proj / "0", c.hidden, c.proj_hidden, false),
            proj_2: linear(&proj / "2", c.proj_hidden, embed_dim, false),
        }
    }

    /// [n, tokens] ids (int64, padded with 0) -> [n, embed] features.
    pub(crate) fn forward(&self, ids: &Tensor) -> Tensor {
        let device = ids.device();
        let keep = ids.ne(PAD_TOKEN_ID);
        // Drop the columns after the last non-padding id of every row.
        let len = ids.size()[1];
        let last = (Tensor::arange(len, (Kind::Int64, device)) * keep.to_kind(Kind::Int64))
            .max()
            .int64_value(&[]);
        let used = (last + 1).clamp(1, len.max(1));
        let ids = ids.narrow(1, 0, used);
        let keep = keep.narrow(1, 0, used);
        let positions = Tensor::arange(used, (Kind::Int64, device)).unsqueeze(0);
        let x = self.word_embeddings.forward(&ids)
            + self.position_embeddings.forward(&positions)
            + self.token_type_embeddings.forward(&positions.zeros_like());
        let x = self.embeddings_norm.forward(&x);
        let mask = keep.unsqueeze(1).unsqueeze(1);
        let x = self.layers.iter().fold(x, |x, l| l.forward(&x, &mask));
        let cls = x.select(1, 0);
        self.proj_2.forward(&self.proj_0.forward(&cls).gelu("none"))
    }
}
