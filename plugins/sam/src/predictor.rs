//! The predictor around [`Sam`], with the official `SamPredictor`'s pre-
//! and post-processing: longest side resized to 1024 (Pillow bilinear on
//! uint8), normalised with the pixel mean/std, padded bottom/right; prompt
//! coordinates scaled to the resized frame; low-resolution logits
//! upsampled bilinearly to 1024, cropped to the resized size, resized to
//! the original size and thresholded at 0.
//!
//! MedSAM's recipe ([`Recipe::MedSam`], its published inference script):
//! the grey image resized to 1024 x 1024 with scikit-image's cubic spline
//! (aspect not kept), min-max to [0, 1] without SAM's mean and standard
//! deviation, prompts scaled by `1024 / W` and `1024 / H`; the
//! low-resolution logits go through a sigmoid, are upsampled bilinearly
//! to the original size and thresholded at 0.5.
//!
//! The image embedding is computed once per image ([`SamPredictor::embed`])
//! and reused for any number of prompt sets; prompt sets of the same shape
//! are decoded as one batch.

use super::model::{Sam, PIXEL_MEAN, PIXEL_STD};
use super::prompt_encoder::PointPrompts;
use super::resize::{pil_resize_bilinear, preprocess_shape};
use super::spline_resize::medsam_resize;
use clisc_sdk::PluginError;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

clisc_sdk::setting_choice! {
    /// Which pre- and post-processing an embedding was made with (the
    /// `sam` plugin's `preprocess` setting names them).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Recipe {
        /// Meta's `SamPredictor`.
        Sam = "clisc",
        /// MedSAM's inference script.
        MedSam = "medsam",
    }
}

/// An image's embedding with the sizes needed to map masks back.
#[derive(Debug)]
pub struct ImageEmbedding {
    /// The recipe that made it (and that maps its masks back).
    pub recipe: Recipe,
    /// `(1, 256, 64, 64)` encoder output.
    pub features: Tensor,
    /// `(h, w)` of the image as given.
    pub original_size: (usize, usize),
    /// `(h, w)` after resizing the longest side to 1024.
    pub input_size: (usize, usize),
}

impl ImageEmbedding {
    /// Writes the embedding to a `.safetensors` file.
    pub fn save(&self, path: &Path) -> Result<(), PluginError> {
        let (oh, ow) = self.original_size;
        let (ih, iw) = self.input_size;
        let recipe = i64::from(self.recipe == Recipe::MedSam);
        let sizes = Tensor::from_slice(&[oh as i64, ow as i64, ih as i64, iw as i64, recipe]);
        let features = self.features.to_device(Device::Cpu);
        Tensor::write_safetensors(&[("features", &features), ("sizes", &sizes)], path).map_err(
            |e| {
                PluginError::io(format!(
                    "cannot write SAM embedding cache {}: {e}",
                    path.display()
                ))
            },
        )
    }

    /// Reads an embedding written by [`ImageEmbedding::save`].
    pub fn load(path: &Path, device: Device) -> Result<Self, PluginError> {
        let bad =
            |m: String| PluginError::io(format!("SAM embedding cache {}: {m}", path.display()));
        let map: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .collect();
        let features = map
            .get("features")
            .ok_or_else(|| bad("no `features` tensor".into()))?
            .to_device(device);
        let sizes = map
            .get("sizes")
            .ok_or_else(|| bad("no `sizes` tensor".into()))?;
        let s: Vec<i64> = Vec::<i64>::try_from(sizes).map_err(|e| bad(e.to_string()))?;
        if s.len() != 4 && s.len() != 5 {
            return Err(bad(format!(
                "`sizes` has {} values, expected 4 or 5",
                s.len()
            )));
        }
        Ok(Self {
            recipe: if s.get(4) == Some(&1) {
                Recipe::MedSam
            } else {
                Recipe::Sam
            },
            features,
            original_size: (s[0] as usize, s[1] as usize),
            input_size: (s[2] as usize, s[3] as usize),
        })
    }
}

/// One prompt set in the original image's pixel coordinates.
#[derive(Debug, Default)]
pub struct SamPrompt {
    /// Points `(x, y)` (x = column) with labels (true = foreground).
    pub points: Vec<([f64; 2], bool)>,
    /// Box `x0, y0, x1, y1`.
    pub bbox: Option<[f64; 4]>,
    /// Low-resolution mask logits `(1, 256, 256)` from an earlier prediction.
    pub mask_input: Option<Tensor>,
}

impl SamPrompt {
    fn shape_key(&self) -> (usize, bool, bool) {
        (
            self.points.len(),
            self.bbox.is_some(),
            self.mask_input.is_some(),
        )
    }
    /// True when the set holds no prompt at all.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.bbox.is_none() && self.mask_input.is_none()
    }
}

/// The predictions for one prompt set.
#[derive(Debug)]
pub struct SamOutput {
    /// Binary masks `(M, H, W)` at the original size (M = 3 or 1), row-major.
    pub masks: Vec<Vec<u8>>,
    /// Predicted IoU of each mask.
    pub iou: Vec<f32>,
    /// Low-resolution logits `(M, 256, 256)`.
    pub low_res: Tensor,
}

impl SamOutput {
    /// Index of the mask with the highest predicted IoU.
    pub fn best(&self) -> usize {
        let mut best = 0;
        for (i, &v) in self.iou.iter().enumerate() {
            if v > self.iou[best] {
                best = i;
            }
        }
        best
    }
}

/// SAM with the official predictor's pre- and post-processing.
#[derive(Debug)]
pub struct SamPredictor {
    /// The model.
    pub model: Sam,
    dense_pe: Tensor,
}

impl SamPredictor {
    /// Wraps a loaded model.
    pub fn new(model: Sam) -> Self {
        let dense_pe = tch::no_grad(|| model.prompt_encoder.dense_pe());
        Self { model, dense_pe }
    }

    /// Loads a checkpoint onto the device named by a pipeline device string
    /// (`auto`, `cpu`, `cuda:N`), for callers that do not use `tch` types.
    pub fn load_on(path: &Path, device: &str) -> Result<Self, PluginError> {
        Self::load(path, clisc_nn::resolve_device(device)?)
    }

    /// Loads a checkpoint onto `device` (see [`Sam::load`]).
    pub fn load(path: &Path, device: Device) -> Result<Self, PluginError> {
        Ok(Self::new(Sam::load(path, device)?))
    }

    /// The model input for an RGB uint8 image (`w x h`, interleaved):
    /// `(1, 3, 1024, 1024)` normalised and padded, and the resized size.
    pub fn preprocess(
        &self,
        rgb: &[u8],
        w: usize,
        h: usize,
    ) -> Result<(Tensor, (usize, usize)), PluginError> {
        if w == 0 || h == 0 || rgb.len() != w * h * 3 {
            return Err(PluginError::input(format!(
                "SAM expects a non-empty {w}x{h} RGB image ({} bytes), got {} bytes",
                w * h * 3,
                rgb.len()
            )));
        }
        let size = self.model.img_size() as usize;
        let (nh, nw) = preprocess_shape(h, w, size);
        let resized = pil_resize_bilinear(rgb, w, h, 3, nw, nh);
        let device = self.model.device();
        let x = Tensor::from_slice(&resized)
            .view([nh as i64, nw as i64, 3])
            .to_device(device)
            .permute([2, 0, 1])
            .unsqueeze(0);
        let mean = Tensor::from_slice(&PIXEL_MEAN.map(|v| v as f32))
            .view([1, 3, 1, 1])
            .to_device(device);
        let std = Tensor::from_slice(&PIXEL_STD.map(|v| v as f32))
            .view([1, 3, 1, 1])
            .to_device(device);
        let x = (x.to_kind(Kind::Float) - mean) / std;
        let x = x.constant_pad_nd([0, (size - nw) as i64, 0, (size - nh) as i64]);
        Ok((x, (nh, nw)))
    }

    /// Computes the image embedding of an RGB uint8 image.
    pub fn embed(&self, rgb: &[u8], w: usize, h: usize) -> Result<ImageEmbedding, PluginError> {
        let (x, input_size) = self.preprocess(rgb, w, h)?;
        let features = tch::no_grad(|| self.model.image_encoder.forward(&x));
        Ok(ImageEmbedding {
            recipe: Recipe::Sam,
            features,
            original_size: (h, w),
            input_size,
        })
    }

    /// Computes the image embedding of a grey uint8 image with MedSAM's
    /// recipe (see the module documentation).
    pub(crate) fn embed_medsam(
        &self,
        grey: &[u8],
        w: usize,
        h: usize,
    ) -> Result<ImageEmbedding, PluginError> {
        let size = self.model.img_size() as usize;
        let resized = medsam_resize(grey, w, h, size, size).ok_or_else(|| {
            PluginError::input(format!(
                "MedSAM preprocessing enlarges a slice to {size} x {size}; got a {w} x {h} image (empty, or larger than {size} on a side)"
            ))
        })?;
        let mut embedding = self.embed_medsam_resized(&resized)?;
        embedding.original_size = (h, w);
        Ok(embedding)
    }

    /// MedSAM's embedding of an image already resized to the model's
    /// square input (its `img_1024`, one grey channel): min-max to [0, 1]
    /// in f64, repeated to three channels, encoded.
    pub fn embed_medsam_resized(&self, grey: &[u8]) -> Result<ImageEmbedding, PluginError> {
        let size = self.model.img_size() as usize;
        if grey.len() != size * size {
            return Err(PluginError::input(format!(
                "MedSAM expects a {size} x {size} image, got {} pixels",
                grey.len()
            )));
        }
        let lo = f64::from(*grey.iter().min().expect("not empty"));
        let hi = f64::from(*grey.iter().max().expect("not empty"));
        let range = (hi - lo).max(1e-8);
        let unit: Vec<f32> = grey
            .iter()
            .map(|&v| ((f64::from(v) - lo) / range) as f32)
            .collect();
        let x = Tensor::from_slice(&unit)
            .view([1, 1, size as i64, size as i64])
            .repeat([1, 3, 1, 1])
            .to_device(self.model.device());
        let features = tch::no_grad(|| self.model.image_encoder.forward(&x));
        Ok(ImageEmbedding {
            recipe: Recipe::MedSam,
            features,
            original_size: (size, size),
            input_size: (size, size),
        })
    }

    /// Predicts masks for every prompt set; sets with the same number of
    /// points and the same box/mask presence are decoded together.
    pub fn predict(
        &self,
        embedding: &ImageEmbedding,
        prompts: &[SamPrompt],
        multimask_output: bool,
    ) -> Result<Vec<SamOutput>, PluginError> {
        let mut groups: BTreeMap<(usize, bool, bool), Vec<usize>> = BTreeMap::new();
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(PluginError::input(format!(
                    "SAM prompt set {i} has no point, box or mask"
                )));
            }
            groups.entry(p.shape_key()).or_default().push(i);
        }
        let mut out: Vec<Option<SamOutput>> = prompts.iter().map(|_| None).collect();
        for ((n_points, has_box, has_mask), members) in groups {
            let batch: Vec<&SamPrompt> = members.iter().map(|&i| &prompts[i]).collect();
            let results = tch::no_grad(|| {
                self.predict_batch(
                    embedding,
                    &batch,
                    n_points,
                    has_box,
                    has_mask,
                    multimask_output,
                )
            })?;
            for (i, r) in members.into_iter().zip(results) {
                out[i] = Some(r);
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every prompt set predicted"))
            .collect())
    }

    fn predict_batch(
        &self,
        emb: &ImageEmbedding,
        batch: &[&SamPrompt],
        n_points: usize,
        has_box: bool,
        has_mask: bool,
        multimask_output: bool,
    ) -> Result<Vec<SamOutput>, PluginError> {
        let device = self.model.device();
        let b = batch.len() as i64;
        let (oh, ow) = emb.original_size;
        let (ih, iw) = emb.input_size;
        // ResizeLongestSide.apply_coords: float64 scaling, then float32.
        let sx = iw as f64 / ow as f64;
        let sy = ih as f64 / oh as f64;
        let points = if n_points > 0 {
            let mut coords = Vec::with_capacity(batch.len() * n_points * 2);
            let mut labels = Vec::with_capacity(batch.len() * n_points);
            for p in batch {
                for ([x, y], positive) in &p.points {
                    coords.push((x * sx) as f32);
                    coords.push((y * sy) as f32);
                    labels.push(if *positive { 1i32 } else { 0 });
                }
            }
            let coords = Tensor::from_slice(&coords)
                .view([b, n_points as i64, 2])
                .to_device(device);
            let labels = Tensor::from_slice(&labels)
                .view([b, n_points as i64])
                .to_device(device);
            Some((coords, labels))
        } else {
            None
        };
        let boxes = has_box.then(|| {
            let v: Vec<f32> = batch
                .iter()
                .flat_map(|p| {
                    let [x0, y0, x1, y1] = p.bbox.expect("grouped by box presence");
                    [
                        (x0 * sx) as f32,
                        (y0 * sy) as f32,
                        (x1 * sx) as f32,
                        (y1 * sy) as f32,
                    ]
                })
                .collect();
            Tensor::from_slice(&v).view([b, 4]).to_device(device)
        });
        let masks = if has_mask {
            let mut v = Vec::with_capacity(batch.len());
            for (i, p) in batch.iter().enumerate() {
                let m = p.mask_input.as_ref().expect("grouped by mask presence");
                if m.size() != [1, 256, 256] && m.size() != [256, 256] {
                    return Err(PluginError::input(format!(
                        "SAM mask input {i} has shape {:?}, expected [1, 256, 256] low-resolution logits",
                        m.size()
                    )));
                }
                v.push(
                    m.to_kind(Kind::Float)
                        .to_device(device)
                        .view([1, 1, 256, 256]),
                );
            }
            Some(Tensor::cat(&v, 0))
        } else {
            None
        };
        let pts = points.as_ref().map(|(c, l)| PointPrompts {
            coords: c,
            labels: l,
        });
        let (sparse, dense) =
            self.model
                .prompt_encoder
                .forward(pts, boxes.as_ref(), masks.as_ref());
        let (low_res, iou) = self.model.mask_decoder.forward(
            &emb.features,
            &self.dense_pe,
            &sparse,
            &dense,
            multimask_output,
        );
        let binary = match emb.recipe {
            Recipe::Sam => self
                .postprocess(&low_res, emb.input_size, emb.original_size)
                .gt(0.0),
            Recipe::MedSam => medsam_probability(&low_res, emb.original_size).gt(0.5),
        };
        let binary = binary
            .to_kind(Kind::Uint8)
            .to_device(Device::Cpu)
            .contiguous();
        let iou = iou.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let m = low_res.size()[1];
        let mut outputs = Vec::with_capacity(batch.len());
        for i in 0..b {
            let masks: Vec<Vec<u8>> = (0..m)
                .map(|j| Vec::<u8>::try_from(binary.get(i).get(j).view([-1])).expect("u8 mask"))
                .collect();
            let iou_i: Vec<f32> = Vec::<f32>::try_from(iou.get(i)).expect("f32 iou");
            outputs.push(SamOutput {
                masks,
                iou: iou_i,
                low_res: low_res.get(i),
            });
        }
        Ok(outputs)
    }

    /// `Sam.postprocess_masks`: logits at the original size (the
    /// [`Recipe::Sam`] post-processing).
    pub(crate) fn postprocess(
        &self,
        low_res: &Tensor,
        input_size: (usize, usize),
        original_size: (usize, usize),
    ) -> Tensor {
        let size = self.model.img_size();
        let x = low_res.upsample_bilinear2d([size, size], false, None, None);
        let x = x
            .narrow(2, 0, input_size.0 as i64)
            .narrow(3, 0, input_size.1 as i64);
        x.upsample_bilinear2d(
            [original_size.0 as i64, original_size.1 as i64],
            false,
            None,
            None,
        )
    }
}

/// MedSAM's post-processing: sigmoid of the low-resolution logits,
/// upsampled bilinearly to `original_size` (its mask is `> 0.5`).
pub(crate) fn medsam_probability(low_res: &Tensor, original_size: (usize, usize)) -> Tensor {
    low_res.sigmoid().upsample_bilinear2d(
        [original_size.0 as i64, original_size.1 as i64],
        false,
        None,
        None,
    )
}
