//! SAM 2 (`SAM2Base`): the modules under their official parameter names,
//! loading of the official checkpoints, and the per-frame steps both
//! predictors use: image features, the SAM heads with occlusion handling
//! and object pointers, memory encoding, and memory conditioning.
//! Mirrors `modeling/sam2_base.py` with the settings of the official
//! configs (high-resolution features in the decoder, object pointers in
//! the memory, multimask tracking, fixed "no object" pointer).

use crate::config::{Release, Sam2Config, HIDDEN_DIM, MEM_DIM, NO_OBJ_SCORE};
use crate::image_encoder::{
    sine_position_encoding, sine_wavelengths, BackboneFeatures, ImageEncoder,
};
use crate::mask_decoder::MaskDecoder;
use crate::memory_attention::MemoryAttention;
use crate::memory_encoder::{Memory, MemoryEncoder};
use clisc_nn::WeightFile;
use clisc_sam::common::Mlp;
use clisc_sam::prompt_encoder::{PointPrompts, PromptEncoder};
use clisc_sdk::PluginError;
use std::path::Path;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

/// Pixel mean and standard deviation of the input normalisation (ImageNet).
pub const PIXEL_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// See [`PIXEL_MEAN`].
pub const PIXEL_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// What the SAM heads give for one frame (`_forward_sam_heads`).
#[derive(Debug)]
pub(crate) struct HeadOutput {
    /// The chosen mask's low-resolution logits `(B, 1, S/4, S/4)`
    /// (`NO_OBJ_SCORE` everywhere when the object is judged absent).
    pub low_res: Tensor,
    /// The same upsampled to the model input `(B, 1, S, S)`.
    pub high_res: Tensor,
    /// Object pointer `(B, 256)`.
    pub obj_ptr: Tensor,
    /// Occlusion logits `(B, 1)`.
    pub object_score_logits: Tensor,
}

/// SAM 2 with its weights.
#[derive(Debug)]
pub struct Sam2 {
    /// Holds every parameter (official names).
    pub vs: VarStore,
    image_encoder: ImageEncoder,
    prompt_encoder: PromptEncoder,
    mask_decoder: MaskDecoder,
    memory_attention: MemoryAttention,
    memory_encoder: MemoryEncoder,
    obj_ptr_proj: Mlp,
    obj_ptr_tpos_proj: Option<nn::Linear>,
    maskmem_tpos_enc: Tensor,
    no_mem_embed: Tensor,
    no_obj_ptr: Tensor,
    no_obj_embed_spatial: Option<Tensor>,
    /// The configuration.
    pub config: Sam2Config,
}

impl Sam2 {
    /// A model with zero-initialised parameters on `device` (load weights
    /// before use).
    pub fn new(config: &Sam2Config, device: Device) -> Self {
        let vs = VarStore::new(device);
        let root = vs.root();
        let d = HIDDEN_DIM;
        let sam2_1 = config.release == Release::Sam2_1;
        // Declared so that the official checkpoints load completely; it
        // turns mask prompts into object pointers, which clisc never sends.
        let _mask_downsample = nn::conv2d(
            &root / "mask_downsample",
            1,
            1,
            4,
            nn::ConvConfig {
                stride: 4,
                ..Default::default()
            },
        );
        let _no_mem_pos_enc = root.zeros("no_mem_pos_enc", &[1, 1, d]);
        let mut model = Self {
            image_encoder: ImageEncoder::new(&root / "image_encoder", &config.hiera),
            prompt_encoder: PromptEncoder::new(
                &root / "sam_prompt_encoder",
                d,
                config.embedding_size(),
                config.image_size,
                16,
            ),
            mask_decoder: MaskDecoder::new(&root / "sam_mask_decoder"),
            memory_attention: MemoryAttention::new(
                &root / "memory_attention",
                config.memory_attention_layers,
            ),
            memory_encoder: MemoryEncoder::new(&root / "memory_encoder"),
            obj_ptr_proj: Mlp::new(&root / "obj_ptr_proj", d, d, d, 3),
            obj_ptr_tpos_proj: sam2_1
                .then(|| nn::linear(&root / "obj_ptr_tpos_proj", d, MEM_DIM, Default::default())),
            maskmem_tpos_enc: root.zeros("maskmem_tpos_enc", &[config.num_maskmem, 1, 1, MEM_DIM]),
            no_mem_embed: root.zeros("no_mem_embed", &[1, 1, d]),
            no_obj_ptr: root.zeros("no_obj_ptr", &[1, d]),
            no_obj_embed_spatial: sam2_1.then(|| root.zeros("no_obj_embed_spatial", &[1, MEM_DIM])),
            config: config.clone(),
            vs,
        };
        model.vs.freeze();
        model
    }

    /// Loads an official checkpoint (`sam2.1_hiera_*.pt`, `sam2_hiera_*.pt`,
    /// `MedSAM2_latest.pt`: `torch.save({"model": state_dict})`; a bare
    /// state dict or a `.safetensors` export also load) for inputs of
    /// `image_size` pixels (`None`: the official size, see
    /// [`Sam2Config::infer`]); the architecture is inferred from the tensors.
    pub fn load(path: &Path, image_size: Option<i64>, device: Device) -> Result<Self, PluginError> {
        let mut weights = WeightFile::open(path)?;
        if weights
            .get("model.image_encoder.trunk.patch_embed.proj.weight")
            .is_some()
        {
            weights.strip_prefix("model.");
        }
        let config = Sam2Config::infer(&weights, image_size)?;
        let model = Self::new(&config, device);
        weights.copy_into(&model.vs, &[])?;
        tracing::info!(file = %path.display(), variant = %config.variant(), "loaded SAM 2 weights");
        Ok(model)
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Side of the square model input.
    pub fn image_size(&self) -> i64 {
        self.config.image_size
    }

    /// Image features of a normalised `(1, 3, S, S)` input (`forward_image`
    /// and `_prepare_backbone_features`).
    pub(crate) fn forward_image(&self, input: &Tensor) -> BackboneFeatures {
        let mut levels = self.image_encoder.forward(input);
        let vision = levels.pop().expect("three levels");
        let s1 = levels.pop().expect("three levels");
        let s0 = levels.pop().expect("three levels");
        let (h, w) = (vision.size()[2], vision.size()[3]);
        BackboneFeatures {
            high_res: [
                self.mask_decoder.conv_s0.forward(&s0),
                self.mask_decoder.conv_s1.forward(&s1),
            ],
            vision_pos: sine_position_encoding(HIDDEN_DIM, h, w, vision.device()),
            vision,
        }
    }

    /// The features an unconditioned frame (an image, or a video's first
    /// prompted frame) gives the heads: `vision + no_mem_embed`.
    pub(crate) fn without_memory(&self, vision: &Tensor) -> Tensor {
        vision + self.no_mem_embed.view([1, -1, 1, 1])
    }

    /// Sparse and dense prompt embeddings of points `(B, N, 2)` in the
    /// model's frame with labels `(B, N)` (1 / 0 clicks, 2 / 3 box corners,
    /// -1 padding).
    pub(crate) fn embed_prompts(&self, coords: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
        let points = PointPrompts { coords, labels };
        self.prompt_encoder.forward(Some(points), None, None)
    }

    /// The mask decoder on prompt embeddings (image mode: no occlusion
    /// handling, see [`Sam2::sam_heads`] for frames).
    pub(crate) fn decode(
        &self,
        image: &Tensor,
        high_res: &[Tensor; 2],
        sparse: &Tensor,
        dense: &Tensor,
        multimask_output: bool,
    ) -> crate::mask_decoder::DecoderOutput {
        let pe = self.prompt_encoder.dense_pe();
        self.mask_decoder
            .forward(image, &pe, sparse, dense, high_res, multimask_output)
    }

    /// The SAM heads on a frame (`_forward_sam_heads`): masks of absent
    /// objects become `NO_OBJ_SCORE`, the best mask by predicted IoU is
    /// chosen when several are returned, and the object pointer is the
    /// projected output token (or the learned "no object" pointer).
    /// Without points a single padding point is sent.
    pub(crate) fn sam_heads(
        &self,
        pix_feat: &Tensor,
        high_res: &[Tensor; 2],
        points: Option<(&Tensor, &Tensor)>,
        multimask_output: bool,
    ) -> HeadOutput {
        let device = pix_feat.device();
        let (coords, labels) = match points {
            Some((c, l)) => (c.shallow_clone(), l.shallow_clone()),
            None => (
                Tensor::zeros([1, 1, 2], (Kind::Float, device)),
                -Tensor::ones([1, 1], (Kind::Int64, device)),
            ),
        };
        let (sparse, dense) = self.embed_prompts(&coords, &labels);
        let out = self.decode(pix_feat, high_res, &sparse, &dense, multimask_output);
        let appearing = out.object_score_logits.gt(0.0);
        let low_res_multi = out
            .masks
            .where_scalarother(&appearing.view([-1, 1, 1, 1]), NO_OBJ_SCORE);
        let s = self.image_size();
        let high_res_multi = low_res_multi.upsample_bilinear2d([s, s], false, None, None);
        let mut token = out.sam_tokens.select(1, 0);
        let (low_res, high_res) = if multimask_output {
            let best = out.iou.argmax(-1, false);
            let batch = Tensor::arange(best.size()[0], (Kind::Int64, device));
            let pick = |t: &Tensor| t.index(&[Some(&batch), Some(&best)]);
            if out.sam_tokens.size()[1] > 1 {
                token = pick(&out.sam_tokens);
            }
            (
                pick(&low_res_multi).unsqueeze(1),
                pick(&high_res_multi).unsqueeze(1),
            )
        } else {
            (low_res_multi, high_res_multi)
        };
        let lambda = appearing.to_kind(Kind::Float);
        let obj_ptr =
            self.obj_ptr_proj.forward(&token) * &lambda + (1.0 - &lambda) * &self.no_obj_ptr;
        HeadOutput {
            low_res,
            high_res,
            obj_ptr,
            object_score_logits: out.object_score_logits,
        }
    }

    /// Encodes a frame's mask into a memory (`_encode_new_memory`): the
    /// mask is binarised (`binarize`, masks from clicks) or put through a
    /// sigmoid, scaled by 20 and shifted by -10; absent objects add the
    /// learned "no object" embedding (SAM 2.1).
    pub(crate) fn encode_memory(
        &self,
        vision: &Tensor,
        high_res_masks: &Tensor,
        object_score_logits: &Tensor,
        binarize: bool,
    ) -> Memory {
        let mask = if binarize {
            high_res_masks.gt(0.0).to_kind(Kind::Float)
        } else {
            high_res_masks.sigmoid()
        };
        let mask = mask * 20.0 - 10.0;
        let mut memory = self.memory_encoder.forward(vision, &mask);
        if let Some(no_obj) = &self.no_obj_embed_spatial {
            let absent: Tensor = 1.0 - object_score_logits.gt(0.0).to_kind(Kind::Float);
            memory.features =
                &memory.features + absent.view([-1, 1, 1, 1]) * no_obj.view([1, -1, 1, 1]);
        }
        memory
    }

    /// Temporal position encoding of a memory `t_pos` frames back
    /// (0 = conditioning frame): `maskmem_tpos_enc[num_maskmem - t_pos - 1]`,
    /// `(1, 1, 64)`.
    pub(crate) fn memory_time_encoding(&self, t_pos: i64) -> Tensor {
        self.maskmem_tpos_enc
            .select(0, self.config.num_maskmem - t_pos - 1)
            .view([1, 1, MEM_DIM])
    }

    /// Position encoding of object pointers at temporal offsets
    /// `offsets` (`get_1d_sine_pe(offsets / max_offset)` projected to 64
    /// channels; zeros for SAM 2.0, which has none): `(N, 64)`.
    pub(crate) fn pointer_time_encoding(&self, offsets: &[i64], max_offset: i64) -> Tensor {
        let device = self.device();
        let n = offsets.len() as i64;
        let Some(proj) = &self.obj_ptr_tpos_proj else {
            return Tensor::zeros([n, MEM_DIM], (Kind::Float, device));
        };
        let pos = Tensor::from_slice(offsets)
            .to_device(device)
            .to_kind(Kind::Float)
            / max_offset as f64;
        let p = pos.unsqueeze(-1) / sine_wavelengths(HIDDEN_DIM / 2, device);
        proj.forward(&Tensor::cat(&[p.sin(), p.cos()], -1))
    }

    /// Whether object pointers carry the sign of their temporal offset
    /// (SAM 2.1) or its absolute value (SAM 2.0).
    pub(crate) fn signed_pointer_offsets(&self) -> bool {
        self.config.release == Release::Sam2_1
    }

    /// Conditions a frame's stride-16 features `(1, 256, h, w)` on its
    /// memory `(1, M, 64)` (object pointers last), `(_prepare_memory_conditioned_features)`.
    pub(crate) fn attend_memory(
        &self,
        vision: &Tensor,
        vision_pos: &Tensor,
        memory: &Tensor,
        memory_pos: &Tensor,
        num_obj_ptr_tokens: i64,
    ) -> Tensor {
        let (b, c, h, w) = vision.size4().expect("(B, C, H, W)");
        let tokens = |t: &Tensor| t.flatten(2, 3).permute([0, 2, 1]);
        let out = self.memory_attention.forward(
            &tokens(vision),
            &tokens(vision_pos),
            memory,
            memory_pos,
            num_obj_ptr_tokens,
        );
        out.permute([0, 2, 1]).view([b, c, h, w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_has_the_official_parameter_count() {
        let model = Sam2::new(&Sam2Config::official("hiera_t", 1024).unwrap(), Device::Cpu);
        let vars = model.vs.variables();
        let n: i64 = vars.values().map(|t| t.numel() as i64).sum();
        // sum(p.numel() for p in build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml").state_dict().values())
        assert_eq!(n, 38_962_754);
        assert_eq!(vars.len(), 471);
    }
}
