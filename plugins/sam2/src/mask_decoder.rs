//! SAM 2's mask decoder (`sam_mask_decoder`): SAM's two-way transformer
//! with an extra object-score token, high-resolution features added while
//! upscaling, a sigmoid IoU head, an occlusion ("object score") head, and
//! the fallback from an unstable single mask to the best of the three
//! multimask outputs. Mirrors `modeling/sam/mask_decoder.py` as built by
//! `build_sam2` (`dynamic_multimask_via_stability`, delta 0.05, threshold
//! 0.98).

use crate::config::HIDDEN_DIM;
use clisc_sam::common::{Activation, LayerNorm2d, Mlp};
use clisc_sam::mask_decoder::{
    hypernetwork_masks, FeedForwardNames, MaskDecoderConfig, TwoWayTransformer,
};
use tch::nn;
use tch::{Kind, Tensor};

/// Mask tokens: one single-mask output and three multimask outputs.
const NUM_MASK_TOKENS: i64 = 4;
const STABILITY_DELTA: f64 = 0.05;
const STABILITY_THRESHOLD: f64 = 0.98;

/// What the decoder returns for a batch of prompt sets.
#[derive(Debug)]
pub(crate) struct DecoderOutput {
    /// Low-resolution mask logits `(B, M, S/4, S/4)`, `M` = 3 with
    /// multimask output, else 1.
    pub masks: Tensor,
    /// Predicted IoU of each mask `(B, M)`.
    pub iou: Tensor,
    /// The output tokens that become object pointers `(B, M', C)`.
    pub sam_tokens: Tensor,
    /// Occlusion logits `(B, 1)`: > 0 means the object is visible.
    pub object_score_logits: Tensor,
}

/// The decoder.
#[derive(Debug)]
pub(crate) struct MaskDecoder {
    transformer: TwoWayTransformer,
    iou_token: Tensor,
    mask_tokens: Tensor,
    obj_score_token: Tensor,
    up0: nn::ConvTranspose2D,
    up1: LayerNorm2d,
    up3: nn::ConvTranspose2D,
    /// `conv_s0` / `conv_s1`: applied to the FPN levels by `forward_image`.
    pub(crate) conv_s0: nn::Conv2D,
    pub(crate) conv_s1: nn::Conv2D,
    hypernetworks: Vec<Mlp>,
    iou_head: Mlp,
    obj_score_head: Mlp,
}

impl MaskDecoder {
    /// Declares the variables under `p` (= `sam_mask_decoder`).
    pub(crate) fn new(p: nn::Path) -> Self {
        let d = HIDDEN_DIM;
        let up = &p / "output_upscaling";
        let s2 = nn::ConvTransposeConfig {
            stride: 2,
            ..Default::default()
        };
        let transformer_cfg = MaskDecoderConfig {
            feedforward_names: FeedForwardNames::Sam2,
            ..Default::default()
        };
        Self {
            transformer: TwoWayTransformer::new(&p / "transformer", &transformer_cfg),
            iou_token: (&p / "iou_token").zeros("weight", &[1, d]),
            mask_tokens: (&p / "mask_tokens").zeros("weight", &[NUM_MASK_TOKENS, d]),
            obj_score_token: (&p / "obj_score_token").zeros("weight", &[1, d]),
            up0: nn::conv_transpose2d(&up / 0, d, d / 4, 2, s2),
            up1: LayerNorm2d::new(&up / 1, d / 4),
            up3: nn::conv_transpose2d(&up / 3, d / 4, d / 8, 2, s2),
            conv_s0: nn::conv2d(&p / "conv_s0", d, d / 8, 1, Default::default()),
            conv_s1: nn::conv2d(&p / "conv_s1", d, d / 4, 1, Default::default()),
            hypernetworks: (0..NUM_MASK_TOKENS)
                .map(|i| Mlp::new(&p / "output_hypernetworks_mlps" / i, d, d, d / 8, 3))
                .collect(),
            iou_head: Mlp::with_activation(
                &p / "iou_prediction_head",
                [d, 256, NUM_MASK_TOKENS],
                3,
                Activation::Relu,
                true,
            ),
            obj_score_head: Mlp::new(&p / "pred_obj_score_head", d, d, 1, 3),
        }
    }

    /// Decodes masks for a batch of prompt sets on one image.
    ///
    /// `image`: `(1, C, h, w)` or `(B, C, h, w)`; `image_pe`: `(1, C, h, w)`;
    /// `sparse`: `(B, N, C)`; `dense`: `(B, C, h, w)`; `high_res`: the
    /// `conv_s0` / `conv_s1` features of the same image.
    pub(crate) fn forward(
        &self,
        image: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        high_res: &[Tensor; 2],
        multimask_output: bool,
    ) -> DecoderOutput {
        let (all_masks, all_iou, mask_tokens_out, object_score_logits) =
            self.predict_masks(image, image_pe, sparse, dense, high_res);
        let (masks, iou) = if multimask_output {
            (all_masks.narrow(1, 1, 3), all_iou.narrow(1, 1, 3))
        } else {
            dynamic_multimask_via_stability(&all_masks, &all_iou)
        };
        // The object pointer comes from the multimask tokens when several
        // masks are returned, else always from the single-mask token.
        let sam_tokens = if multimask_output {
            mask_tokens_out.narrow(1, 1, 3)
        } else {
            mask_tokens_out.narrow(1, 0, 1)
        };
        DecoderOutput {
            masks,
            iou,
            sam_tokens,
            object_score_logits,
        }
    }

    fn predict_masks(
        &self,
        image: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        high_res: &[Tensor; 2],
    ) -> (Tensor, Tensor, Tensor, Tensor) {
        let b = sparse.size()[0];
        let output_tokens = Tensor::cat(
            &[&self.obj_score_token, &self.iou_token, &self.mask_tokens],
            0,
        )
        .unsqueeze(0)
        .expand([b, -1, -1], false);
        let tokens = Tensor::cat(&[output_tokens, sparse.shallow_clone()], 1);
        let src = if image.size()[0] == b {
            image + dense
        } else {
            image.repeat_interleave_self_int(b, Some(0), None::<i64>) + dense
        };
        let pos_src = image_pe.repeat_interleave_self_int(b, Some(0), None::<i64>);
        let (_, c, h, w) = src.size4().expect("4D");
        let (hs, src) = self.transformer.forward(&src, &pos_src, &tokens);
        let iou_token_out = hs.select(1, 1);
        let mask_tokens_out = hs.narrow(1, 2, NUM_MASK_TOKENS);
        let src = src.transpose(1, 2).view([b, c, h, w]);
        let [feat_s0, feat_s1] = high_res;
        let up = self
            .up1
            .forward(&(src.apply(&self.up0) + feat_s1))
            .gelu("none");
        let up = (up.apply(&self.up3) + feat_s0).gelu("none");
        let masks = hypernetwork_masks(&self.hypernetworks, &mask_tokens_out, &up);
        let iou_pred = self.iou_head.forward(&iou_token_out);
        let object_score_logits = self.obj_score_head.forward(&hs.select(1, 0));
        (masks, iou_pred, mask_tokens_out, object_score_logits)
    }
}

/// The single mask (token 0) where its stability score (IoU of the masks
/// thresholded at +-0.05) reaches 0.98, else the multimask output with
/// the highest predicted IoU (`_dynamic_multimask_via_stability`).
fn dynamic_multimask_via_stability(all_masks: &Tensor, all_iou: &Tensor) -> (Tensor, Tensor) {
    let multimask = all_masks.narrow(1, 1, 3);
    let multimask_iou = all_iou.narrow(1, 1, 3);
    let best = multimask_iou.argmax(-1, false);
    let batch = Tensor::arange(multimask.size()[0], (Kind::Int64, multimask.device()));
    let best_masks = multimask.index(&[Some(&batch), Some(&best)]).unsqueeze(1);
    let best_iou = multimask_iou
        .index(&[Some(&batch), Some(&best)])
        .unsqueeze(1);
    let single = all_masks.narrow(1, 0, 1);
    let single_iou = all_iou.narrow(1, 0, 1);
    let flat = single.flatten(-2, -1);
    let area_i = flat
        .gt(STABILITY_DELTA)
        .sum_dim_intlist(-1, false, Kind::Float);
    let area_u = flat
        .gt(-STABILITY_DELTA)
        .sum_dim_intlist(-1, false, Kind::Float);
    let stability = (&area_i / &area_u).where_self(&area_u.gt(0.0), &area_u.ones_like());
    let stable = stability.ge(STABILITY_THRESHOLD);
    let masks = single.where_self(
        &stable.unsqueeze(-1).unsqueeze(-1).expand_as(&single),
        &best_masks,
    );
    let iou = single_iou.where_self(&stable.expand_as(&single_iou), &best_iou);
    (masks, iou)
}
