//! SAM 2's memory attention (`memory_attention`): the current frame's
//! stride-16 features self-attend and cross-attend to the memories of
//! earlier frames and to object pointers, with 2D rotary position
//! encoding (RoPE) on the spatial tokens. Mirrors
//! `modeling/memory_attention.py` and `RoPEAttention` /
//! `apply_rotary_enc` in `modeling/sam/transformer.py` and
//! `modeling/position_encoding.py`.

use crate::config::{HIDDEN_DIM, MEM_DIM};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

const ROPE_THETA: f64 = 10000.0;
const FEEDFORWARD: i64 = 2048;

/// The 2D axial rotary encoding of a square grid of `n` tokens
/// (row-major) over `dim` channels: `(n, dim / 2)` unit complex numbers
/// (`compute_axial_cis`: the first half of the rotated pairs turn with the
/// column, the second half with the row).
fn axial_rotation(dim: i64, n: i64, device: Device) -> Tensor {
    let side = (n as f64).sqrt() as i64;
    let opts = (Kind::Float, device);
    let freqs = Tensor::arange_start_step(0, dim, 4, opts).narrow(0, 0, dim / 4) / dim as f64;
    let freqs = Tensor::from(ROPE_THETA as f32)
        .to_device(device)
        .pow(&freqs)
        .reciprocal();
    let t = Tensor::arange(side * side, opts);
    let t_x = t.remainder(side as f64);
    let t_y = t.floor_divide_scalar(side as f64);
    let angles = Tensor::cat(&[t_x.outer(&freqs), t_y.outer(&freqs)], -1);
    Tensor::polar(&angles.ones_like(), &angles)
}

/// Rotates consecutive channel pairs of `x` `(B, heads, N, dim)` by the
/// complex rotations `(N', dim / 2)`, where `N` is a multiple of `N'`
/// (the keys of several memories repeat the grid's rotations)
/// (`apply_rotary_enc`).
fn rotate(x: &Tensor, rotation: &Tensor) -> Tensor {
    let size = x.size();
    let n = size[2];
    let repeat = n / rotation.size()[0];
    let rotation = if repeat > 1 {
        rotation.repeat([repeat, 1])
    } else {
        rotation.shallow_clone()
    };
    let pairs = x
        .reshape([size[0], size[1], n, size[3] / 2, 2])
        .view_as_complex();
    (pairs * rotation).view_as_real().flatten(3, 4)
}

/// Single-head attention with rotary encoding of queries and of all keys
/// but the last `num_k_exclude_rope` (the object pointers).
#[derive(Debug)]
struct RoPEAttention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
}

impl RoPEAttention {
    fn new(p: nn::Path, kv_in_dim: i64) -> Self {
        let d = HIDDEN_DIM;
        Self {
            q_proj: nn::linear(&p / "q_proj", d, d, Default::default()),
            k_proj: nn::linear(&p / "k_proj", kv_in_dim, d, Default::default()),
            v_proj: nn::linear(&p / "v_proj", kv_in_dim, d, Default::default()),
            out_proj: nn::linear(&p / "out_proj", d, d, Default::default()),
        }
    }

    /// `q`: `(B, Nq, C)`, `k`/`v`: `(B, Nk, C_kv)` -> `(B, Nq, C)`;
    /// `rotation`: [`axial_rotation`] of the queries' grid.
    fn forward(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        rotation: &Tensor,
        num_k_exclude_rope: i64,
    ) -> Tensor {
        // One head: (B, N, C) -> (B, 1, N, C).
        let q = self.q_proj.forward(q).unsqueeze(1);
        let k = self.k_proj.forward(k).unsqueeze(1);
        let v = self.v_proj.forward(v).unsqueeze(1);
        let q = rotate(&q, rotation);
        let num_k_rope = k.size()[2] - num_k_exclude_rope;
        let k = if num_k_exclude_rope > 0 {
            Tensor::cat(
                &[
                    rotate(&k.narrow(2, 0, num_k_rope), rotation),
                    k.narrow(2, num_k_rope, num_k_exclude_rope),
                ],
                2,
            )
        } else {
            rotate(&k, rotation)
        };
        let out = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, false, None, false,
        );
        self.out_proj.forward(&out.squeeze_dim(1))
    }
}

/// One layer: self-attention, cross-attention to the memory (position
/// encoding added to its keys), feed-forward; pre-norm residuals.
#[derive(Debug)]
struct MemoryAttentionLayer {
    self_attn: RoPEAttention,
    cross_attn_image: RoPEAttention,
    linear1: nn::Linear,
    linear2: nn::Linear,
    norm1: nn::LayerNorm,
    norm2: nn::LayerNorm,
    norm3: nn::LayerNorm,
}

impl MemoryAttentionLayer {
    fn new(p: nn::Path) -> Self {
        let d = HIDDEN_DIM;
        let ln = Default::default();
        Self {
            self_attn: RoPEAttention::new(&p / "self_attn", d),
            cross_attn_image: RoPEAttention::new(&p / "cross_attn_image", MEM_DIM),
            linear1: nn::linear(&p / "linear1", d, FEEDFORWARD, Default::default()),
            linear2: nn::linear(&p / "linear2", FEEDFORWARD, d, Default::default()),
            norm1: nn::layer_norm(&p / "norm1", vec![d], ln),
            norm2: nn::layer_norm(&p / "norm2", vec![d], ln),
            norm3: nn::layer_norm(&p / "norm3", vec![d], ln),
        }
    }

    fn forward(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        pos: &Tensor,
        rotation: &Tensor,
        num_obj_ptrs: i64,
    ) -> Tensor {
        let t = tgt.apply(&self.norm1);
        let tgt = tgt + self.self_attn.forward(&t, &t, &t, rotation, 0);
        let t = tgt.apply(&self.norm2);
        let keys = memory + pos;
        let tgt = &tgt
            + self
                .cross_attn_image
                .forward(&t, &keys, memory, rotation, num_obj_ptrs);
        let t = tgt.apply(&self.norm3);
        let ff = self.linear2.forward(&self.linear1.forward(&t).relu());
        tgt + ff
    }
}

/// The memory attention stack.
#[derive(Debug)]
pub(crate) struct MemoryAttention {
    layers: Vec<MemoryAttentionLayer>,
    norm: nn::LayerNorm,
}

impl MemoryAttention {
    /// Declares the variables under `p` (= `memory_attention`).
    pub(crate) fn new(p: nn::Path, num_layers: i64) -> Self {
        Self {
            layers: (0..num_layers)
                .map(|i| MemoryAttentionLayer::new(&p / "layers" / i))
                .collect(),
            norm: nn::layer_norm(&p / "norm", vec![HIDDEN_DIM], Default::default()),
        }
    }

    /// Conditions the current frame on its memories.
    ///
    /// `current`, `current_pos`: `(B, HW, C)`; `memory`, `memory_pos`:
    /// `(B, M, 64)` with the `num_obj_ptrs` object-pointer tokens last.
    /// Returns `(B, HW, C)`.
    pub(crate) fn forward(
        &self,
        current: &Tensor,
        current_pos: &Tensor,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_obj_ptrs: i64,
    ) -> Tensor {
        let mut out = current + current_pos * 0.1;
        let rotation = axial_rotation(HIDDEN_DIM, current.size()[1], current.device());
        for layer in &self.layers {
            out = layer.forward(&out, memory, memory_pos, &rotation, num_obj_ptrs);
        }
        out.apply(&self.norm)
    }
}
