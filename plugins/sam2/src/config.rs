//! The shape and behaviour of a SAM 2 model, inferred from a checkpoint.
//!
//! The official configs (`configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml` in
//! the `sam2` package, `sam2.1_hiera_t512.yaml` in MedSAM2's repository)
//! differ in the Hiera trunk, the image size and the number of
//! memory-attention layers. The trunk's width and blocks per stage, the
//! memory-attention depth and the SAM 2.0 / 2.1 differences are visible in
//! the tensors; the attention heads, the global-attention blocks and the
//! window sizes are not, so they come from the official config the trunk
//! matches. The image size leaves no trace in the weights: the official
//! size is 1024 for Meta's checkpoints and 512 for MedSAM2's, which is
//! the one official config with two memory-attention layers (Meta's have
//! four); a caller may also give it.

use clisc_nn::WeightFile;
use clisc_sdk::PluginError;

/// Hiera trunk (`image_encoder.trunk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HieraConfig {
    /// Width of the first stage (`embed_dim`).
    pub embed_dim: i64,
    /// Heads of the first stage (`num_heads`), doubled at each stage.
    pub num_heads: i64,
    /// Blocks per stage (`stages`).
    pub stages: Vec<i64>,
    /// Blocks with global attention (`global_att_blocks`).
    pub global_att_blocks: Vec<i64>,
    /// Window size per stage (`window_spec`).
    pub window_spec: Vec<i64>,
    /// Grid of the interpolated background position embedding
    /// (`window_pos_embed_bkg_spatial_size`).
    pub pos_embed_size: (i64, i64),
}

impl HieraConfig {
    /// Total blocks.
    pub fn depth(&self) -> i64 {
        self.stages.iter().sum()
    }

    /// Index of the last block of each stage (`stage_ends`).
    pub(crate) fn stage_ends(&self) -> Vec<i64> {
        self.stages
            .iter()
            .scan(0, |sum, n| {
                *sum += n;
                Some(*sum - 1)
            })
            .collect()
    }

    /// Width of each stage's output, first stage first.
    pub(crate) fn stage_dims(&self) -> Vec<i64> {
        (0..self.stages.len() as u32)
            .map(|i| self.embed_dim * 2i64.pow(i))
            .collect()
    }
}

/// An official trunk and the config values its weights do not show.
struct OfficialTrunk {
    /// Config name (`hiera_t`, ...).
    name: &'static str,
    embed_dim: i64,
    stages: [i64; 4],
    num_heads: i64,
    global_att_blocks: [i64; 3],
    window_spec: [i64; 4],
    pos_embed_size: (i64, i64),
}

const OFFICIAL_TRUNKS: [OfficialTrunk; 4] = [
    OfficialTrunk {
        name: "hiera_t",
        embed_dim: 96,
        stages: [1, 2, 7, 2],
        num_heads: 1,
        global_att_blocks: [5, 7, 9],
        window_spec: [8, 4, 14, 7],
        pos_embed_size: (7, 7),
    },
    OfficialTrunk {
        name: "hiera_s",
        embed_dim: 96,
        stages: [1, 2, 11, 2],
        num_heads: 1,
        global_att_blocks: [7, 10, 13],
        window_spec: [8, 4, 14, 7],
        pos_embed_size: (7, 7),
    },
    OfficialTrunk {
        name: "hiera_b+",
        embed_dim: 112,
        stages: [2, 3, 16, 3],
        num_heads: 2,
        global_att_blocks: [12, 16, 20],
        window_spec: [8, 4, 14, 7],
        pos_embed_size: (14, 14),
    },
    OfficialTrunk {
        name: "hiera_l",
        embed_dim: 144,
        stages: [2, 6, 36, 4],
        num_heads: 2,
        global_att_blocks: [23, 33, 43],
        window_spec: [8, 4, 16, 8],
        pos_embed_size: (7, 7),
    },
];

/// Which release's temporal encoding of object pointers the checkpoint
/// was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// SAM 2 (July 2024): no temporal encoding of object pointers.
    Sam2,
    /// SAM 2.1 (and MedSAM2): signed, projected temporal encoding of
    /// object pointers and a learned "no object" memory embedding.
    Sam2_1,
}

/// Everything needed to build a SAM 2 model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sam2Config {
    /// Official name of the trunk (`hiera_t`, ...).
    pub trunk_name: &'static str,
    /// The trunk.
    pub hiera: HieraConfig,
    /// Side of the square model input (`image_size`).
    pub image_size: i64,
    /// Memory-attention layers (`memory_attention.num_layers`: 4; 2 in MedSAM2).
    pub memory_attention_layers: i64,
    /// Memories a frame attends to (`num_maskmem`, 7).
    pub num_maskmem: i64,
    /// SAM 2 or SAM 2.1 behaviour.
    pub release: Release,
}

/// Width of the FPN neck and of every SAM head (`d_model`).
pub(crate) const HIDDEN_DIM: i64 = 256;
/// Width of a memory (`memory_encoder.out_dim`).
pub(crate) const MEM_DIM: i64 = 64;
/// Stride of the lowest-resolution feature map the heads use.
pub(crate) const BACKBONE_STRIDE: i64 = 16;
/// Object pointers a frame can attend to at most (`max_obj_ptrs_in_encoder`).
pub(crate) const MAX_OBJ_PTRS: i64 = 16;
/// Mask logit that stands for "no object" (`NO_OBJ_SCORE`).
pub(crate) const NO_OBJ_SCORE: f64 = -1024.0;

impl Sam2Config {
    /// The official config of trunk `name` (`hiera_t`, `hiera_s`,
    /// `hiera_b+`, `hiera_l`) for SAM 2.1 at `image_size`.
    pub fn official(name: &str, image_size: i64) -> Option<Self> {
        let t = OFFICIAL_TRUNKS.iter().find(|t| t.name == name)?;
        Some(Self::from_trunk(t, image_size, 4, Release::Sam2_1))
    }

    fn from_trunk(t: &OfficialTrunk, image_size: i64, layers: i64, release: Release) -> Self {
        Self {
            trunk_name: t.name,
            hiera: HieraConfig {
                embed_dim: t.embed_dim,
                num_heads: t.num_heads,
                stages: t.stages.to_vec(),
                global_att_blocks: t.global_att_blocks.to_vec(),
                window_spec: t.window_spec.to_vec(),
                pos_embed_size: t.pos_embed_size,
            },
            image_size,
            memory_attention_layers: layers,
            num_maskmem: 7,
            release,
        }
    }

    /// The official name of this model, e.g. `sam2.1_hiera_t` (at 1024
    /// px) or `sam2.1_hiera_t512`.
    pub fn variant(&self) -> String {
        let release = match self.release {
            Release::Sam2 => "sam2",
            Release::Sam2_1 => "sam2.1",
        };
        let size = if self.image_size == 1024 {
            String::new()
        } else {
            self.image_size.to_string()
        };
        format!("{release}_{}{size}", self.trunk_name)
    }

    /// Infers the model from the tensors of a checkpoint (names without
    /// the `model.` wrapper), for an input of `image_size` pixels (`None`:
    /// the official size, 512 with two memory-attention layers as MedSAM2,
    /// else 1024).
    pub fn infer(weights: &WeightFile, image_size: Option<i64>) -> Result<Self, PluginError> {
        let path = weights.path().display().to_string();
        let patch = weights
            .get("image_encoder.trunk.patch_embed.proj.weight")
            .ok_or_else(|| {
                PluginError::weights(format!(
                    "{path}: not a SAM 2 checkpoint (no tensor image_encoder.trunk.patch_embed.proj.weight; \
                     expected the official sam2.1_hiera_*.pt / sam2_hiera_*.pt or MedSAM2_latest.pt)"
                ))
            })?;
        let embed_dim = patch.size()[0];
        let stages = stage_lengths(weights);
        let trunk = OFFICIAL_TRUNKS
            .iter()
            .find(|t| t.embed_dim == embed_dim && t.stages.as_slice() == stages.as_slice())
            .ok_or_else(|| {
                PluginError::weights(format!(
                    "{path}: Hiera trunk with width {embed_dim} and blocks per stage {stages:?} \
                     matches no official config (expected one of {})",
                    OFFICIAL_TRUNKS
                        .iter()
                        .map(|t| format!("{} {}/{:?}", t.name, t.embed_dim, t.stages))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let layers = count_indexed(weights, "memory_attention.layers.");
        if layers == 0 {
            return Err(PluginError::weights(format!(
                "{path}: no memory_attention.layers.* tensors (expected a SAM 2 video-capable checkpoint)"
            )));
        }
        let release = if weights.get("obj_ptr_tpos_proj.weight").is_some() {
            Release::Sam2_1
        } else {
            Release::Sam2
        };
        let image_size = image_size.unwrap_or(if layers == 2 { 512 } else { 1024 });
        if image_size % (BACKBONE_STRIDE * 2) != 0 || image_size <= 0 {
            return Err(PluginError::config(format!(
                "sam2: image_size = {image_size} for {path}: expected a positive multiple of {} (1024 for Meta's checkpoints, 512 for MedSAM2), or 0 for the official size",
                BACKBONE_STRIDE * 2
            ))
            .about_setting("image_size"));
        }
        Ok(Self::from_trunk(trunk, image_size, layers, release))
    }

    /// Side of the grid the SAM heads work on (`image_size / 16`).
    pub fn embedding_size(&self) -> i64 {
        self.image_size / BACKBONE_STRIDE
    }
}

/// Blocks per stage: a stage starts where a block changes width (it has a
/// `proj` of its shortcut).
fn stage_lengths(weights: &WeightFile) -> Vec<i64> {
    let depth = count_indexed(weights, "image_encoder.trunk.blocks.");
    let mut stages = vec![];
    let mut current = 0;
    for i in 0..depth {
        let starts = weights
            .get(&format!("image_encoder.trunk.blocks.{i}.proj.weight"))
            .is_some();
        if starts && current > 0 {
            stages.push(current);
            current = 0;
        }
        current += 1;
    }
    if current > 0 {
        stages.push(current);
    }
    stages
}

/// Number of consecutive indices `N` with tensors named `{prefix}N.*`.
fn count_indexed(weights: &WeightFile, prefix: &str) -> i64 {
    weights
        .names()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse::<i64>().ok())
        .max()
        .map_or(0, |n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_has_the_official_stage_layout() {
        let c = Sam2Config::official("hiera_t", 1024).unwrap();
        assert_eq!(c.hiera.depth(), 12);
        assert_eq!(c.hiera.stage_ends(), vec![0, 2, 9, 11]);
        assert_eq!(c.hiera.stage_dims(), vec![96, 192, 384, 768]);
        assert_eq!(c.variant(), "sam2.1_hiera_t");
        assert_eq!(
            Sam2Config::official("hiera_t", 512).unwrap().variant(),
            "sam2.1_hiera_t512"
        );
        assert!(Sam2Config::official("hiera_x", 1024).is_none());
    }
}
