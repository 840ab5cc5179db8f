//! `torchscript-promptable-segmenter`: a box/point-promptable 2D model
//! exported with TorchScript, under one of three prompt encodings:
//!
//! * `box-points`: `forward(image [1, C, S, S], box [1, 4], points [1, N, 3])`;
//! * `prompt-channels`: `forward(x [1, C + 2, S, S])`, the box and the
//!   points drawn as two extra channels;
//! * `embed-decode`: `embed(image [1, C, h, w])` once per slice, then
//!   `decode(embedding, box [1, 4], points [1, N, 2], labels [1, N])` per
//!   prompt set (the SAM family: the heavy image encoder runs once per
//!   slice, however many prompt sets the slice has).
//!
//! Boxes are `[x0, y0, x1, y1]` in model-input pixels, all -1 without a
//! box; points are `x, y` in model-input pixels. The output (`[1, K, H',
//! W']`, `[1, H', W']` or `[H', W']`) is resized back to the slice as
//! scores, then turned into the tumour probability and thresholded.

use super::contract::{Contract, ContractSettings, OutputKind};
use super::tensor_err;
use abi_stable::std_types::{ROption, RResult, RSlice, RVec};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{PromptableSegmenter, SliceImage};
use clisc_sdk::{
    plugin_settings, ConfigField, HostContext, Mask2d, Plugin, PluginError, PromptSet, StageKind,
    StageObject,
};
use tch::{Kind, Tensor};

/// `torchscript-promptable-segmenter`: a box/point-promptable 2D model.
pub struct TorchScriptPromptablePlugin;

impl Plugin for TorchScriptPromptablePlugin {
    const NAME: &'static str = "torchscript-promptable-segmenter";
    const KIND: StageKind = StageKind::PromptableSegmenter;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Any TorchScript promptable 2D segmenter (box/points as tensors, as prompt channels, or SAM-style embed + decode); contract in TOML";

    fn settings() -> Vec<ConfigField> {
        PromptableSettings::schema()
    }

    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
        let s = PromptableSettings::read(&settings)?;
        let contract = Contract::load(Self::NAME, s.contract, ctx.device.as_str())?;
        let (input_size, encoding) = (s.input_size, s.prompt_encoding);
        let keep_aspect = s.keep_aspect;
        if keep_aspect && input_size <= 0 {
            return Err(PluginError::config(format!(
                "{}: `keep_aspect = true` needs a positive `input_size`, found {input_size}",
                Self::NAME
            ))
            .about_setting("keep_aspect"));
        }
        Ok(StageObject::promptable_segmenter(TorchScriptPromptable {
            contract,
            input_size,
            keep_aspect,
            encoding,
            point_radius: s.point_radius,
        }))
    }
}

plugin_settings! {
    /// The settings of `torchscript-promptable-segmenter`.
    struct PromptableSettings {
        /// The model contract.
        contract: ContractSettings = group(ContractSettings::schema(), ContractSettings::read),
        /// side of the square input the model expects (0 = native slice size)
        input_size: i64 = integer(0),
        /// scale the slice's longer side to input_size and keep its aspect (the model pads, as SAM
        /// does); the output is cropped to the scaled slice before it is resized back
        keep_aspect: bool = bool(false),
        /// box-points: forward(image, box [1,4], points [1,N,3]); prompt-channels: forward(image
        /// with 2 extra channels: box mask, point map); embed-decode: embed(image) once per
        /// slice, decode(embedding, box [1,4], points [1,N,2], labels [1,N]) per prompt set
        prompt_encoding: PromptEncoding = choice(PromptEncoding::BoxPoints.name(), PromptEncoding::NAMES),
        /// prompt-channels: radius in model pixels of the disc drawn per point
        point_radius: i64 = integer(2),
    }
}

clisc_sdk::setting_choice! {
    /// How prompts reach the model (`prompt_encoding`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum PromptEncoding {
        /// `forward(image, box, points)`.
        BoxPoints = "box-points",
        /// Two extra image channels: box mask and point map.
        PromptChannels = "prompt-channels",
        /// `embed(image)` once per slice, `decode(...)` per prompt set.
        EmbedDecode = "embed-decode",
    }
}

/// The stage of `torchscript-promptable-segmenter`.
pub struct TorchScriptPromptable {
    contract: Contract,
    input_size: i64,
    keep_aspect: bool,
    encoding: PromptEncoding,
    point_radius: i64,
}

/// A slice's size, and its size and scale in the model's input.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Slice width and height.
    w: i64,
    h: i64,
    /// The slice scaled for the model (before any padding the model does).
    sw: i64,
    sh: i64,
}

impl Frame {
    /// The model-input frame of a `w` x `h` slice: native (`input_size`
    /// 0), stretched to the square `input_size`, or (`keep_aspect`) its
    /// longer side scaled to `input_size` with SAM's rounding
    /// (`ResizeLongestSide.get_preprocess_shape`).
    fn new(w: i64, h: i64, input_size: i64, keep_aspect: bool) -> Frame {
        let s = input_size;
        let (sw, sh) = if s <= 0 {
            (w, h)
        } else if keep_aspect {
            let scale = s as f64 / w.max(h) as f64;
            let side = |d: i64| ((d as f64 * scale + 0.5) as i64).max(1);
            (side(w), side(h))
        } else {
            (s, s)
        };
        Frame { w, h, sw, sh }
    }

    /// Model pixels per slice pixel, along x and y.
    fn scale(&self) -> (f32, f32) {
        (
            self.sw as f32 / self.w as f32,
            self.sh as f32 / self.h as f32,
        )
    }
}

impl TorchScriptPromptable {
    fn run(&self, slice: &SliceImage, prompts: &[PromptSet]) -> Result<Vec<Mask2d>, PluginError> {
        let c = &self.contract;
        let img = &slice.image;
        if img.channels != 1 {
            return Err(PluginError::input(format!(
                "{}: expected a one-channel slice, got {} channels",
                c.plugin, img.channels
            )));
        }
        let frame = Frame::new(
            img.width as i64,
            img.height as i64,
            self.input_size,
            self.keep_aspect,
        );
        tch::no_grad(|| {
            let x = Tensor::from_slice(img.data.as_slice())
                .to_device(c.device)
                .reshape([1, 1, frame.h, frame.w]);
            let mut x = c.prepare(&x);
            if (frame.sw, frame.sh) != (frame.w, frame.h) {
                x = x.upsample_bilinear2d([frame.sh, frame.sw], false, None, None);
            }
            let embedding = match self.encoding {
                PromptEncoding::EmbedDecode => Some(c.call("embed", &[x.shallow_clone()])?),
                _ => None,
            };
            prompts
                .iter()
                .map(|set| {
                    let scores = self.scores(&x, embedding.as_ref(), set, &frame)?;
                    self.mask(&scores, &frame)
                })
                .collect()
        })
    }

    /// The model's scores `[1, K, H', W']` for one prompt set.
    fn scores(
        &self,
        x: &Tensor,
        embedding: Option<&Tensor>,
        set: &PromptSet,
        frame: &Frame,
    ) -> Result<Tensor, PluginError> {
        let c = &self.contract;
        let (fx, fy) = frame.scale();
        let bbox = match &set.bbox {
            ROption::RSome(b) => Some([b.x0 * fx, b.y0 * fy, b.x1 * fx, b.y1 * fy]),
            ROption::RNone => None,
        };
        let points: Vec<[f32; 3]> = set
            .points
            .iter()
            .map(|p| [p.x * fx, p.y * fy, if p.positive { 1.0 } else { 0.0 }])
            .collect();
        let n = points.len() as i64;
        let box_tensor = || {
            Tensor::from_slice(&bbox.unwrap_or([-1.0; 4]))
                .to_device(c.device)
                .reshape([1, 4])
        };
        let out = match (self.encoding, embedding) {
            (PromptEncoding::PromptChannels, _) => {
                let prompt = prompt_channels(frame.sw, frame.sh, &bbox, &points, self.point_radius);
                let prompt = Tensor::from_slice(&prompt)
                    .to_device(c.device)
                    .reshape([1, 2, frame.sh, frame.sw]);
                c.forward(&[Tensor::cat(&[x, &prompt], 1)])?
            }
            (PromptEncoding::EmbedDecode, Some(embedding)) => {
                let xy: Vec<f32> = points.iter().flat_map(|p| [p[0], p[1]]).collect();
                let labels: Vec<i64> = points.iter().map(|p| p[2] as i64).collect();
                c.call(
                    "decode",
                    &[
                        embedding.shallow_clone(),
                        box_tensor(),
                        Tensor::from_slice(&xy)
                            .to_device(c.device)
                            .reshape([1, n, 2]),
                        Tensor::from_slice(&labels)
                            .to_device(c.device)
                            .reshape([1, n]),
                    ],
                )?
            }
            _ => {
                let flat: Vec<f32> = points.iter().flatten().copied().collect();
                let p = Tensor::from_slice(&flat)
                    .to_device(c.device)
                    .reshape([1, n, 3]);
                c.forward(&[x.shallow_clone(), box_tensor(), p])?
            }
        };
        match out.size().as_slice() {
            [1, _, _, _] => Ok(out),
            [1, h, w] | [h, w] => Ok(out.reshape([1, 1, *h, *w])),
            s => Err(c.bad_output(s, "[1, K, H, W], [1, H, W] or [H, W]")),
        }
    }

    /// The slice's mask from the model's scores: cropped to the scaled
    /// slice (`keep_aspect`, square outputs only), resized back to the slice (nearest for masks,
    /// bilinear for logits and probabilities), then thresholded.
    fn mask(&self, scores: &Tensor, frame: &Frame) -> Result<Mask2d, PluginError> {
        let c = &self.contract;
        let mut scores = scores.to_kind(Kind::Float);
        let (oh, ow) = (scores.size()[2], scores.size()[3]);
        // A square output covers the padded square input (SAM's); a model
        // that answers at the scaled slice's own shape is not cropped.
        if self.keep_aspect && oh == ow {
            let s = self.input_size as f64;
            let keep = |o: i64, d: i64| ((o as f64 * d as f64 / s).round() as i64).clamp(1, o);
            scores = scores
                .narrow(2, 0, keep(oh, frame.sh))
                .narrow(3, 0, keep(ow, frame.sw));
        }
        if scores.size()[2..] != [frame.h, frame.w] {
            scores = if c.output == OutputKind::Mask {
                scores.upsample_nearest2d([frame.h, frame.w], None, None)
            } else {
                scores.upsample_bilinear2d([frame.h, frame.w], false, None, None)
            };
        }
        let mask = c
            .tumour_mask(&scores)?
            .to_kind(Kind::Uint8)
            .to_device(tch::Device::Cpu)
            .contiguous()
            .reshape([-1]);
        let data: Vec<u8> = Vec::<u8>::try_from(&mask).map_err(|e| tensor_err(c.plugin, e))?;
        Ok(Mask2d {
            width: frame.w as u32,
            height: frame.h as u32,
            data: data.into(),
        })
    }
}

/// The two prompt channels of `prompt_encoding = "prompt-channels"`:
/// channel 0 is 1 inside the box (all 0 without a box), channel 1 is +1 in
/// a disc around positive points and -1 around negative ones.
fn prompt_channels(
    width: i64,
    height: i64,
    bbox: &Option<[f32; 4]>,
    points: &[[f32; 3]],
    radius: i64,
) -> Vec<f32> {
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0f32; 2 * w * h];
    if let Some([x0, y0, x1, y1]) = *bbox {
        for y in 0..h {
            for x in 0..w {
                let (xf, yf) = (x as f32, y as f32);
                if xf >= x0.floor() && xf <= x1.ceil() && yf >= y0.floor() && yf <= y1.ceil() {
                    out[y * w + x] = 1.0;
                }
            }
        }
    }
    let r2 = (radius * radius) as f32;
    for &[px, py, positive] in points {
        let v = if positive > 0.5 { 1.0 } else { -1.0 };
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f32 - px, y as f32 - py);
                if dx * dx + dy * dy <= r2 {
                    out[w * h + y * w + x] = v;
                }
            }
        }
    }
    out
}

impl PromptableSegmenter for TorchScriptPromptable {
    fn segment(
        &mut self,
        slice: &SliceImage,
        prompts: RSlice<'_, PromptSet>,
    ) -> RResult<RVec<Mask2d>, PluginError> {
        self.run(slice, prompts.as_slice()).map(RVec::from).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_aspect_scales_the_longer_side_with_sams_rounding() {
        // SAM's ResizeLongestSide.get_preprocess_shape(155, 240, 1024):
        // scale 1024 / 240, new height int(155 * scale + 0.5) = 661.
        let frame = |w, h, keep_aspect| Frame::new(w, h, 1024, keep_aspect);
        let f = frame(240, 155, true);
        assert_eq!((f.sw, f.sh), (1024, 661));
        let f = frame(155, 240, true);
        assert_eq!((f.sw, f.sh), (661, 1024));
        let f = frame(240, 155, false);
        assert_eq!((f.sw, f.sh), (1024, 1024));
        let f = Frame::new(240, 155, 0, false);
        assert_eq!((f.sw, f.sh), (240, 155));
    }
}
