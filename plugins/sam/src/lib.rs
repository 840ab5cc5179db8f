//! # `sam`: Segment Anything in `tch`
//!
//! The official SAM (ViT-B/L/H image encoder, prompt encoder, two-way
//! transformer mask decoder) under the official parameter names, loading
//! the checkpoints users download (`sam_vit_b_01ec64.pth`, ...), with the
//! official predictor's pre- and post-processing ([`predictor`]), and the
//! `sam` promptable-segmenter plugin that applies CLISC's slice
//! preparation (min-max to 8 bits, histogram equalisation, 3 channels).
#![warn(unreachable_pub)]

pub mod common;
pub mod image_encoder;
pub mod mask_decoder;
pub mod model;
pub mod predictor;
pub mod prompt_encoder;
pub mod resize;
pub mod spline_resize;

use abi_stable::std_types::{RResult, RSlice, RVec};
use clisc_imaging::intensity::{equalize_histogram, minmax_to_u8};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{PromptableSegmenter, SliceImage};
use clisc_sdk::{
    plugin_settings, ConfigField, HostContext, Image2d, Mask2d, Plugin, PluginError, PromptSet,
    StageKind, StageObject,
};
pub use model::{Sam, SamConfig};
pub use predictor::{ImageEmbedding, Recipe, SamOutput, SamPredictor, SamPrompt};
use std::path::{Path, PathBuf};

/// CLISC's slice preparation for SAM: min-max to 8 bits, histogram
/// equalisation (as `cv2.equalizeHist`), grey replicated to RGB. Returns
/// interleaved RGB bytes.
pub fn slice_to_rgb(image: &Image2d) -> Result<Vec<u8>, PluginError> {
    if image.channels != 1 {
        return Err(PluginError::input(format!(
            "sam: expected a one-channel slice, got {} channels",
            image.channels
        )));
    }
    let grey = equalize_histogram(&minmax_to_u8(&image.data));
    Ok(grey.iter().flat_map(|&g| [g, g, g]).collect())
}

/// MedSAM's slice preparation: min-max to 8 bits (the image file MedSAM's
/// script reads), no equalisation; one grey channel.
pub fn slice_to_grey(image: &Image2d) -> Result<Vec<u8>, PluginError> {
    if image.channels != 1 {
        return Err(PluginError::input(format!(
            "sam: expected a one-channel slice, got {} channels",
            image.channels
        )));
    }
    Ok(minmax_to_u8(&image.data))
}

/// Converts an SDK prompt set to SAM's form (box corners and points as
/// given, x = column).
pub(crate) fn to_sam_prompt(set: &PromptSet) -> SamPrompt {
    SamPrompt {
        points: set
            .points
            .iter()
            .map(|p| ([p.x as f64, p.y as f64], p.positive))
            .collect(),
        bbox: set
            .bbox
            .as_ref()
            .map(|b| [b.x0 as f64, b.y0 as f64, b.x1 as f64, b.y1 as f64])
            .into_option(),
        mask_input: None,
    }
}

/// Plugin registration of [`SamSegmenter`].
pub struct SamPlugin;

impl Plugin for SamPlugin {
    const NAME: &'static str = "sam";
    const KIND: StageKind = StageKind::PromptableSegmenter;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Segment Anything (official ViT-B/L/H checkpoints, or MedSAM's with preprocess = \"medsam\") on 8-bit slices";

    fn settings() -> Vec<ConfigField> {
        SamSettings::schema()
    }

    fn create(settings: Settings, ctx: &HostContext) -> Result<StageObject, PluginError> {
        let SamSettings {
            weights,
            multimask,
            preprocess: recipe,
            cache_embeddings,
        } = SamSettings::read(&settings)?;
        let device = clisc_nn::resolve_device(ctx.device.as_str())?;
        if ctx.threads > 0 {
            tch::set_num_threads(ctx.threads as i32);
        }
        let predictor = SamPredictor::load(&weights, device)?;
        ctx.progress.log(
            format!(
                "sam: loaded {} ({}) on {:?}",
                weights.display(),
                predictor.model.config.variant(),
                device
            )
            .as_str()
            .into(),
        );
        let cache_dir =
            cache_embeddings.then(|| PathBuf::from(ctx.work_dir.as_str()).join("sam-embeddings"));
        Ok(StageObject::promptable_segmenter(SamSegmenter {
            weights_key: weights_fingerprint(&weights),
            predictor,
            multimask,
            cache_dir,
            recipe,
        }))
    }
}

plugin_settings! {
    /// The settings of `sam`, each declared once.
    struct SamSettings {
        /// SAM checkpoint as downloaded (sam_vit_b_01ec64.pth etc.) or a .safetensors export
        weights: PathBuf = weights_file(
            "Meta's Segment Anything release (ViT-B, CLISC's choice): https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
        ),
        /// predict 3 masks per prompt set and keep the one with the best predicted IoU
        multimask: bool = bool(false),
        /// clisc: the paper's 8-bit + histogram-equalised slice through Meta's SamPredictor;
        /// medsam: MedSAM's inference recipe (8-bit slice, no equalisation, cubic resize to
        /// 1024 x 1024, [0, 1], sigmoid > 0.5) for medsam_vit_b.pth
        preprocess: Recipe = choice(Recipe::Sam.name(), Recipe::NAMES),
        /// store each slice's image embedding (4 MiB) in the stage's work dir and reuse it on
        /// later calls
        cache_embeddings: bool = bool(false),
    }
}

/// The `sam` stage: one embedding per slice, one mask per prompt set.
pub struct SamSegmenter {
    predictor: SamPredictor,
    multimask: bool,
    cache_dir: Option<PathBuf>,
    weights_key: u64,
    recipe: Recipe,
}

impl SamSegmenter {
    /// A segmenter around an already loaded predictor (for tools and
    /// tests); `cache_dir` enables the embedding cache.
    pub fn new(
        predictor: SamPredictor,
        multimask: bool,
        cache_dir: Option<PathBuf>,
        weights_key: u64,
    ) -> Self {
        Self {
            predictor,
            multimask,
            cache_dir,
            weights_key,
            recipe: Recipe::Sam,
        }
    }

    /// Uses `recipe`'s pre- and post-processing (default [`Recipe::Sam`]).
    pub fn with_recipe(mut self, recipe: Recipe) -> Self {
        self.recipe = recipe;
        self
    }

    /// The slice as the recipe's embedding takes it: RGB for SAM, grey
    /// for MedSAM.
    fn prepare(&self, slice: &SliceImage) -> Result<Vec<u8>, PluginError> {
        match self.recipe {
            Recipe::Sam => slice_to_rgb(&slice.image),
            Recipe::MedSam => slice_to_grey(&slice.image),
        }
    }

    /// The embedding of prepared pixels, without the cache.
    fn compute_embedding(
        &self,
        pixels: &[u8],
        w: usize,
        h: usize,
    ) -> Result<ImageEmbedding, PluginError> {
        match self.recipe {
            Recipe::Sam => self.predictor.embed(pixels, w, h),
            Recipe::MedSam => self.predictor.embed_medsam(pixels, w, h),
        }
    }

    fn embedding(&self, slice: &SliceImage, rgb: &[u8]) -> Result<ImageEmbedding, PluginError> {
        let (w, h) = (slice.image.width as usize, slice.image.height as usize);
        let Some(dir) = &self.cache_dir else {
            return self.compute_embedding(rgb, w, h);
        };
        let recipe = [u8::from(self.recipe == Recipe::MedSam)];
        let key = fnv1a(
            rgb,
            fnv1a(&recipe, fnv1a(&self.weights_key.to_le_bytes(), FNV_OFFSET)),
        );
        let case_dir = dir.join(sanitize(slice.case_id.as_str()));
        let file = case_dir.join(format!("z{:04}-{key:016x}.safetensors", slice.index));
        if file.exists() {
            match ImageEmbedding::load(&file, self.predictor.model.device()) {
                Ok(e) if e.original_size == (h, w) && e.recipe == self.recipe => return Ok(e),
                Ok(_) => {
                    tracing::warn!(file = %file.display(), "cached SAM embedding has another size; recomputing")
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "unreadable SAM embedding cache; recomputing")
                }
            }
        }
        let emb = self.compute_embedding(rgb, w, h)?;
        std::fs::create_dir_all(&case_dir)
            .map_err(|e| PluginError::io(format!("cannot create {}: {e}", case_dir.display())))?;
        let tmp = file.with_extension("tmp");
        emb.save(&tmp)?;
        std::fs::rename(&tmp, &file).map_err(|e| {
            PluginError::io(format!("cannot move {} into place: {e}", file.display()))
        })?;
        Ok(emb)
    }

    /// Segments one slice: one binary mask per prompt set (empty sets give
    /// empty masks).
    pub fn segment_slice(
        &self,
        slice: &SliceImage,
        prompts: &[PromptSet],
    ) -> Result<Vec<Mask2d>, PluginError> {
        let (w, h) = (slice.image.width, slice.image.height);
        let sam_prompts: Vec<SamPrompt> = prompts.iter().map(to_sam_prompt).collect();
        let active: Vec<usize> = (0..sam_prompts.len())
            .filter(|&i| !sam_prompts[i].is_empty())
            .collect();
        let mut masks: Vec<Mask2d> = prompts.iter().map(|_| Mask2d::zeros(w, h)).collect();
        if active.is_empty() {
            return Ok(masks);
        }
        let pixels = self.prepare(slice)?;
        let emb = self.embedding(slice, &pixels)?;
        let mut sam_prompts = sam_prompts;
        let batch: Vec<SamPrompt> = active
            .iter()
            .map(|&i| std::mem::take(&mut sam_prompts[i]))
            .collect();
        let outputs = self.predictor.predict(&emb, &batch, self.multimask)?;
        for (i, out) in active.into_iter().zip(outputs) {
            let best = out.best();
            masks[i] = Mask2d {
                width: w,
                height: h,
                data: RVec::from(out.masks[best].clone()),
            };
        }
        Ok(masks)
    }
}

impl PromptableSegmenter for SamSegmenter {
    fn segment(
        &mut self,
        slice: &SliceImage,
        prompts: RSlice<'_, PromptSet>,
    ) -> RResult<RVec<Mask2d>, PluginError> {
        self.segment_slice(slice, prompts.as_slice())
            .map(RVec::from)
            .into()
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a, stable across platforms and Rust versions (cache keys).
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Identifies a weight file by canonical path, size and modification time
/// (cheap; a changed file invalidates cached embeddings).
pub(crate) fn weights_fingerprint(path: &Path) -> u64 {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let meta = std::fs::metadata(path).ok();
    let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let h = fnv1a(canon.to_string_lossy().as_bytes(), FNV_OFFSET);
    fnv1a(&mtime.to_le_bytes(), fnv1a(&size.to_le_bytes(), h))
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

clisc_sdk::register_builtin!(SamPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_preparation_is_minmax_then_equalised_grey_rgb() {
        let img = Image2d {
            width: 2,
            height: 2,
            channels: 1,
            data: vec![-1.0, 0.0, 0.0, 1.0].into(),
        };
        let rgb = slice_to_rgb(&img).unwrap();
        assert_eq!(rgb.len(), 12);
        // min-max: [0, 128, 128, 255]; equalised: [0, 170, 170, 255]
        assert_eq!(&rgb[..3], &[0, 0, 0]);
        assert_eq!(&rgb[3..6], &[170, 170, 170]);
        assert_eq!(&rgb[9..], &[255, 255, 255]);
        let bad = Image2d {
            width: 1,
            height: 1,
            channels: 3,
            data: vec![0.0; 3].into(),
        };
        assert!(slice_to_rgb(&bad).is_err());
    }

    /// A small random SAM (narrow, shallow encoder; official input size).
    fn tiny_predictor() -> SamPredictor {
        use image_encoder::ImageEncoderConfig;
        let config = SamConfig {
            encoder: ImageEncoderConfig {
                embed_dim: 32,
                depth: 2,
                num_heads: 2,
                out_chans: 32,
                global_attn_indexes: vec![1],
                ..ImageEncoderConfig::vit_b()
            },
            prompt_embed_dim: 32,
            mask_in_chans: 16,
            decoder: mask_decoder::MaskDecoderConfig {
                transformer_dim: 32,
                mlp_dim: 64,
                num_heads: 2,
                ..Default::default()
            },
        };
        let sam = Sam::new(&config, tch::Device::Cpu);
        tch::manual_seed(3);
        tch::no_grad(|| {
            for (_, mut v) in sam.vs.variables() {
                let r = tch::Tensor::randn(v.size(), (tch::Kind::Float, tch::Device::Cpu)) * 0.2;
                v.copy_(&r);
            }
        });
        SamPredictor::new(sam)
    }

    #[test]
    fn segmenter_caches_embeddings_and_handles_empty_prompt_sets() {
        use clisc_sdk::{BoxXyxy, PromptPoint};
        let dir = tempfile::tempdir().unwrap();
        let seg = SamSegmenter::new(tiny_predictor(), true, Some(dir.path().join("cache")), 42);
        let data: Vec<f32> = (0..40 * 30)
            .map(|i| ((i % 40) as f32 - 20.0).abs() + (i / 40) as f32 * 0.1)
            .collect();
        let slice = SliceImage {
            case_id: "case/1".into(),
            index: 7,
            image: Image2d {
                width: 40,
                height: 30,
                channels: 1,
                data: data.into(),
            },
        };
        let set = PromptSet {
            slice: 7,
            bbox: abi_stable::std_types::ROption::RSome(BoxXyxy {
                x0: 5.0,
                y0: 4.0,
                x1: 30.0,
                y1: 25.0,
            }),
            points: vec![PromptPoint {
                x: 12.0,
                y: 10.0,
                positive: true,
            }]
            .into(),
        };
        let empty = PromptSet {
            slice: 7,
            bbox: abi_stable::std_types::ROption::RNone,
            points: RVec::new(),
        };
        let first = seg
            .segment_slice(&slice, &[set.clone(), empty.clone()])
            .unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(
            (first[0].width, first[0].height, first[0].data.len()),
            (40, 30, 1200)
        );
        assert!(first[1].data.iter().all(|&v| v == 0));
        let files: Vec<_> = std::fs::read_dir(dir.path().join("cache").join("case_1"))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1);
        // Second call reads the cache and gives the same mask.
        let second = seg.segment_slice(&slice, &[set]).unwrap();
        assert_eq!(second[0], first[0]);
        // Only empty prompt sets: no embedding is computed at all.
        let none = SamSegmenter::new(tiny_predictor(), false, None, 0)
            .segment_slice(&slice, &[empty])
            .unwrap();
        assert!(none[0].data.iter().all(|&v| v == 0));
    }

    #[test]
    fn cache_names_are_safe() {
        assert_eq!(sanitize("BraTS20/../x y"), "BraTS20_.._x_y");
        assert_ne!(fnv1a(b"a", FNV_OFFSET), fnv1a(b"b", FNV_OFFSET));
    }
}
