//! PNG montages of one case for the run report: what the ROI stage saw
//! and produced, a few slices at a glance.
//!
//! One row per chosen axial slice; columns, left to right:
//! 1. FLAIR (per-slice min-max grey);
//! 2. one column per CAM round (`initial`, `amda-1`, ...): the activation
//!    as a jet heatmap blended over the FLAIR;
//! 3. the overlay: FLAIR with the final ROI contour (yellow), any extra
//!    contours given by the caller (e.g. pseudo-label, prediction, ground
//!    truth, each in its own colour), the prompt box (cyan) and points
//!    (green = positive, red = negative);
//! 4. with `contours_column` (and an ROI or prompts to draw), the extra
//!    contours move to a last column of their own, so the overlay keeps
//!    only the ROI and the prompts.
//!
//! Tiles are `scale` times the slice size (nearest neighbour), x = column,
//! y = row as everywhere in clisc. The function is pure apart from writing
//! the PNG: it takes SDK data types and returns the slices it drew.

use crate::error::ReportError;
use clisc_pipeline::error::WithContext;
use clisc_sdk::{CaseInput, CasePrompts, LabelVolume, RoiResult};
use image::{Rgb, RgbImage};
use std::path::Path;

/// ROI contour colour (yellow).
pub const ROI_COLOUR: [u8; 3] = [255, 220, 0];
/// Box colour (cyan).
pub(crate) const BOX_COLOUR: [u8; 3] = [0, 220, 255];
/// Positive point colour (green).
pub(crate) const POSITIVE_COLOUR: [u8; 3] = [0, 230, 60];
/// Negative point colour (red).
pub(crate) const NEGATIVE_COLOUR: [u8; 3] = [255, 40, 40];
/// Suggested colour of a promptable-segmenter pseudo-label contour (magenta).
pub(crate) const PSEUDO_LABEL_COLOUR: [u8; 3] = [255, 0, 255];
/// Suggested colour of a network prediction contour (blue).
pub const PREDICTION_COLOUR: [u8; 3] = [40, 140, 255];
/// Suggested colour of a ground-truth contour (orange).
pub const GROUND_TRUTH_COLOUR: [u8; 3] = [255, 140, 0];

/// An extra label volume drawn as a contour on the overlay column.
#[derive(Debug, Clone, Copy)]
pub struct Contour<'a> {
    /// What it is (for logs; the picture has no text).
    pub name: &'a str,
    /// The labels (non-zero = inside), on the case's grid.
    pub labels: &'a LabelVolume,
    /// RGB colour of the contour.
    pub colour: [u8; 3],
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct MontageInput<'a> {
    /// The case (its `flair` channel is shown).
    pub case: &'a CaseInput,
    /// CAM rounds and ROIs (last round = final ROI), if any.
    pub roi: Option<&'a RoiResult>,
    /// Prompts (box and points), if any.
    pub prompts: Option<&'a CasePrompts>,
    /// Extra contours (pseudo-label, prediction, ground truth, ...).
    pub contours: Vec<Contour<'a>>,
    /// Slices to draw; `None` chooses up to `max_slices` automatically.
    pub slices: Option<Vec<usize>>,
    /// Maximum number of automatically chosen slices.
    pub max_slices: usize,
    /// Upscaling factor of the tiles.
    pub scale: usize,
    /// Draw the extra contours in a column of their own, right of the
    /// overlay with the ROI and prompts (instead of on it).
    pub contours_column: bool,
}

impl<'a> MontageInput<'a> {
    /// A montage of `case` with defaults (4 slices, 2x scale) and nothing else drawn.
    pub fn new(case: &'a CaseInput) -> Self {
        Self {
            case,
            roi: None,
            prompts: None,
            contours: Vec::new(),
            slices: None,
            max_slices: 4,
            scale: 2,
            contours_column: false,
        }
    }
}

/// Up to `k` slices spread evenly over the slices where the final ROI (or
/// else the first non-empty contour, or else the brain) is non-empty,
/// always including the one where it is largest.
pub(crate) fn choose_slices(input: &MontageInput<'_>, k: usize) -> Vec<usize> {
    let grid = input.case.image.grid;
    let n = grid.slice_len();
    let nz = grid.shape[2] as usize;
    let source: &[u8] = input
        .roi
        .and_then(|r| r.final_round())
        .map(|r| r.roi.data.as_slice())
        .filter(|d| d.iter().any(|&v| v != 0))
        .or_else(|| {
            input
                .contours
                .iter()
                .map(|c| c.labels.data.as_slice())
                .find(|d| d.iter().any(|&v| v != 0))
        })
        .unwrap_or(input.case.brain_mask.data.as_slice());
    let areas: Vec<usize> = (0..nz)
        .map(|z| {
            source[z * n..(z + 1) * n]
                .iter()
                .filter(|&&v| v != 0)
                .count()
        })
        .collect();
    let present: Vec<usize> = (0..nz).filter(|&z| areas[z] > 0).collect();
    if present.is_empty() || k == 0 {
        return Vec::new();
    }
    let mut out: Vec<usize> = if present.len() <= k {
        present.clone()
    } else {
        (0..k)
            .map(|j| present[(2 * j + 1) * present.len() / (2 * k)])
            .collect()
    };
    let largest = (0..nz)
        .max_by_key(|&z| (areas[z], std::cmp::Reverse(z)))
        .expect("nz > 0");
    if !out.contains(&largest) {
        // replace the chosen slice nearest to the largest one
        let nearest = (0..out.len())
            .min_by_key(|&i| out[i].abs_diff(largest))
            .expect("non-empty");
        out[nearest] = largest;
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Jet colour map of `t` in `[0, 1]`.
fn jet(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    let c = |x: f32| (1.5 - (4.0 * t - x).abs()).clamp(0.0, 1.0);
    [c(3.0), c(2.0), c(1.0)]
}

fn is_edge(mask: &[u8], w: usize, h: usize, x: usize, y: usize) -> bool {
    if mask[x + w * y] == 0 {
        return false;
    }
    x == 0
        || y == 0
        || x + 1 == w
        || y + 1 == h
        || [(x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)]
            .iter()
            .any(|&(a, b)| mask[a + w * b] == 0)
}

/// Background of the montage between tiles (dark grey).
pub const BACKGROUND: [u8; 3] = [24, 24, 24];

struct Canvas {
    img: RgbImage,
    scale: usize,
}

/// One row of tiles: a `w` x `h` slice drawn at canvas row `oy`.
struct Tile {
    w: usize,
    h: usize,
    oy: usize,
}

/// Per-slice min-max normalised FLAIR in `[0, 1]`.
fn slice_grey(values: &[f32]) -> Vec<f32> {
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    values
        .iter()
        .map(|&v| if hi > lo { (v - lo) / (hi - lo) } else { 0.0 })
        .collect()
}

impl Canvas {
    fn fill(&mut self, x0: usize, y0: usize, w: usize, h: usize, c: [u8; 3]) {
        for y in y0..(y0 + h).min(self.img.height() as usize) {
            for x in x0..(x0 + w).min(self.img.width() as usize) {
                self.img.put_pixel(x as u32, y as u32, Rgb(c));
            }
        }
    }
    /// Paints slice pixel (x, y) of the tile at (ox, oy).
    fn pixel(&mut self, ox: usize, oy: usize, x: usize, y: usize, c: [u8; 3]) {
        let s = self.scale;
        self.fill(ox + x * s, oy + y * s, s, s, c);
    }
    /// The grey slice, with the activation `cam` as a jet heatmap over it.
    fn base(&mut self, t: &Tile, ox: usize, grey: &[f32], cam: Option<&[f32]>) {
        for y in 0..t.h {
            for x in 0..t.w {
                let i = x + t.w * y;
                let g = grey[i];
                let c = match cam {
                    Some(cam) => {
                        let (j, a) = (jet(cam[i]), 0.5 * cam[i].clamp(0.0, 1.0).sqrt());
                        [0, 1, 2].map(|k| (255.0 * ((1.0 - a) * g + a * j[k])) as u8)
                    }
                    None => [(255.0 * g) as u8; 3],
                };
                self.pixel(ox, t.oy, x, y, c);
            }
        }
    }
    /// The boundary pixels of `mask` (one slice).
    fn contour(&mut self, t: &Tile, ox: usize, mask: &[u8], colour: [u8; 3]) {
        for y in 0..t.h {
            for x in 0..t.w {
                if is_edge(mask, t.w, t.h, x, y) {
                    self.pixel(ox, t.oy, x, y, colour);
                }
            }
        }
    }
    /// A prompt set's box (outline) and points (squares with a black rim).
    fn prompts(&mut self, t: &Tile, ox: usize, set: &clisc_sdk::PromptSet) {
        let (s, oy) = (self.scale, t.oy);
        let px = |v: f32, max: usize| (v.round().max(0.0) as usize).min(max - 1) * s;
        if let abi_stable::std_types::ROption::RSome(b) = set.bbox {
            let (x0, y0) = (px(b.x0, t.w), px(b.y0, t.h));
            let (x1, y1) = (px(b.x1, t.w) + s - 1, px(b.y1, t.h) + s - 1);
            let k = s.div_ceil(2);
            self.fill(ox + x0, oy + y0, x1 - x0 + 1, k, BOX_COLOUR);
            self.fill(ox + x0, oy + y1 + 1 - k, x1 - x0 + 1, k, BOX_COLOUR);
            self.fill(ox + x0, oy + y0, k, y1 - y0 + 1, BOX_COLOUR);
            self.fill(ox + x1 + 1 - k, oy + y0, k, y1 - y0 + 1, BOX_COLOUR);
        }
        for p in set.points.iter() {
            let cx = ox + px(p.x, t.w) + s / 2;
            let cy = oy + px(p.y, t.h) + s / 2;
            let c = if p.positive {
                POSITIVE_COLOUR
            } else {
                NEGATIVE_COLOUR
            };
            self.fill(cx.saturating_sub(3), cy.saturating_sub(3), 7, 7, [0, 0, 0]);
            self.fill(cx.saturating_sub(2), cy.saturating_sub(2), 5, 5, c);
        }
    }
}

/// Draws the montage and writes it as a PNG at `path` (parent folders are
/// created). Returns the slices drawn (empty: no slice to show, and no file
/// is written).
pub fn write_montage(input: &MontageInput<'_>, path: &Path) -> Result<Vec<usize>, ReportError> {
    let grid = input.case.image.grid;
    let [w, h, nz] = grid.dims();
    let n = w * h;
    let flair = input
        .case
        .image
        .require_channel("flair")
        .map_err(|e| ReportError::Montage(format!("montage of case {}: {e}", input.case.id)))?;
    let slices = match &input.slices {
        Some(s) => s.clone(),
        None => choose_slices(input, input.max_slices),
    };
    if let Some(&z) = slices.iter().find(|&&z| z >= nz) {
        return Err(ReportError::Montage(format!(
            "montage of case {}: slice {z} is outside the volume ({nz} slices)",
            input.case.id
        )));
    }
    if slices.is_empty() {
        return Ok(slices);
    }
    let rounds: Vec<&clisc_sdk::RoiRound> = input
        .roi
        .map(|r| r.rounds.iter().collect())
        .unwrap_or_default();
    for r in &rounds {
        if r.cam.grid.shape != grid.shape || r.roi.grid.shape != grid.shape {
            return Err(ReportError::Montage(format!(
                "montage of case {}: round `{}` is not on the case's grid",
                input.case.id, r.name
            )));
        }
    }
    for c in &input.contours {
        if c.labels.grid.shape != grid.shape {
            return Err(ReportError::Montage(format!(
                "montage of case {}: contour `{}` is not on the case's grid",
                input.case.id, c.name
            )));
        }
    }
    let scale = input.scale.max(1);
    let gap = 4;
    let overlay_col = 1 + rounds.len();
    let has_overlay = !rounds.is_empty() || input.prompts.is_some();
    let separate = input.contours_column && has_overlay && !input.contours.is_empty();
    let cols = overlay_col + 1 + usize::from(separate);
    let (tw, th) = (w * scale, h * scale);
    let width = cols * tw + (cols + 1) * gap;
    let height = slices.len() * th + (slices.len() + 1) * gap;
    let mut canvas = Canvas {
        img: RgbImage::from_pixel(width as u32, height as u32, Rgb(BACKGROUND)),
        scale,
    };
    let col_x = |col: usize| gap + col * (tw + gap);
    for (row, &z) in slices.iter().enumerate() {
        let oy = gap + row * (th + gap);
        let tile = Tile { w, h, oy };
        let grey = slice_grey(&flair[z * n..(z + 1) * n]);
        for col in 0..cols {
            let cam = (1..=rounds.len())
                .contains(&col)
                .then(|| rounds[col - 1].cam.channel("cam"))
                .flatten()
                .map(|c| &c[z * n..(z + 1) * n]);
            canvas.base(&tile, col_x(col), &grey, cam);
        }
        let contour_x = col_x(if separate { cols - 1 } else { overlay_col });
        for c in &input.contours {
            canvas.contour(
                &tile,
                contour_x,
                &c.labels.data[z * n..(z + 1) * n],
                c.colour,
            );
        }
        if let Some(last) = rounds.last() {
            let roi = &last.roi.data[z * n..(z + 1) * n];
            canvas.contour(&tile, col_x(overlay_col), roi, ROI_COLOUR);
        }
        if let Some(prompts) = input.prompts {
            for set in prompts.sets.iter().filter(|s| s.slice as usize == z) {
                canvas.prompts(&tile, col_x(overlay_col), set);
            }
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    canvas.img.save(path).map_err(|source| ReportError::Image {
        context: format!("writing montage {}", path.display()),
        source,
    })?;
    Ok(slices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clisc_sdk::{BoxXyxy, Grid, PromptPoint, PromptSet, RoiRound, Volume};

    #[test]
    fn draws_rows_columns_contours_and_prompts() {
        let grid = Grid::new([20, 10, 6], [1.0; 3]);
        let flair: Vec<f32> = (0..grid.len()).map(|i| (i % 20) as f32).collect();
        let case = CaseInput {
            id: "c".into(),
            image: Volume::single(grid, "flair", flair),
            brain_mask: LabelVolume {
                grid,
                data: vec![1u8; grid.len()].into(),
            },
        };
        let mut roi = LabelVolume::zeros(grid);
        for z in 2..4 {
            for y in 3..7 {
                for x in 5..9 {
                    roi.data[grid.index(x, y, z)] = 1;
                }
            }
        }
        let cam = Volume::single(grid, "cam", vec![0.5; grid.len()]);
        let result = RoiResult {
            rounds: vec![
                RoiRound {
                    name: "initial".into(),
                    cam: cam.clone(),
                    roi: roi.clone(),
                },
                RoiRound {
                    name: "amda-1".into(),
                    cam,
                    roi: roi.clone(),
                },
            ]
            .into(),
        };
        let prompts = CasePrompts {
            sets: vec![PromptSet {
                slice: 2,
                bbox: abi_stable::std_types::ROption::RSome(BoxXyxy {
                    x0: 3.0,
                    y0: 1.0,
                    x1: 11.0,
                    y1: 8.0,
                }),
                points: vec![PromptPoint {
                    x: 6.0,
                    y: 5.0,
                    positive: true,
                }]
                .into(),
            }]
            .into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m/c.png");
        let mut input = MontageInput::new(&case);
        input.roi = Some(&result);
        input.prompts = Some(&prompts);
        input.contours.push(Contour {
            name: "gt",
            labels: &roi,
            colour: [255, 0, 255],
        });
        let drawn = write_montage(&input, &path).unwrap();
        assert_eq!(drawn, vec![2, 3]);
        let img = image::open(&path).unwrap().to_rgb8();
        // 4 columns (FLAIR, 2 CAMs, overlay) of 40 px + 5 gaps; 2 rows of 20 px + 3 gaps.
        assert_eq!(
            (img.width(), img.height()),
            (4 * 40 + 5 * 4, 2 * 20 + 3 * 4)
        );
        let ox = 4 + 3 * 44;
        // ROI contour (drawn last, yellow) at slice pixel (5, 3) of row 0.
        assert_eq!(
            img.get_pixel((ox + 5 * 2) as u32, (4 + 3 * 2) as u32).0,
            ROI_COLOUR
        );
        // Box top edge at slice row 1, column 4.
        assert_eq!(
            img.get_pixel((ox + 4 * 2) as u32, (4 + 2) as u32).0,
            BOX_COLOUR
        );
        // Positive point centre.
        assert_eq!(
            img.get_pixel((ox + 6 * 2 + 1) as u32, (4 + 5 * 2 + 1) as u32)
                .0,
            POSITIVE_COLOUR
        );
        // Explicit slices out of range are an error.
        input.slices = Some(vec![9]);
        assert!(write_montage(&input, &path).is_err());
    }

    #[test]
    fn contours_column_separates_contours_from_the_overlay() {
        let grid = Grid::new([8, 6, 3], [1.0; 3]);
        let case = CaseInput {
            id: "c".into(),
            image: Volume::single(grid, "flair", vec![1.0; grid.len()]),
            brain_mask: LabelVolume {
                grid,
                data: vec![1u8; grid.len()].into(),
            },
        };
        let mut gt = LabelVolume::zeros(grid);
        gt.data[grid.index(3, 3, 1)] = 1;
        let prompts = CasePrompts {
            sets: vec![PromptSet {
                slice: 1,
                bbox: abi_stable::std_types::ROption::RNone,
                points: vec![].into(),
            }]
            .into(),
        };
        let colour = [255, 0, 255];
        let mut input = MontageInput::new(&case);
        input.contours.push(Contour {
            name: "gt",
            labels: &gt,
            colour,
        });
        input.scale = 1;
        input.contours_column = true;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        // Nothing else to overlay: FLAIR and the contours only.
        assert_eq!(write_montage(&input, &path).unwrap(), vec![1]);
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.width() as usize, 2 * 8 + 3 * 4);
        // With prompts: FLAIR, prompts overlay, contours.
        input.prompts = Some(&prompts);
        write_montage(&input, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.width() as usize, 3 * 8 + 4 * 4);
        let at = |col: usize| img.get_pixel((4 + col * 12 + 3) as u32, 4 + 3).0;
        assert_eq!((at(1), at(2)), ([0, 0, 0], colour));
    }

    #[test]
    fn chooses_the_largest_roi_slice() {
        let grid = Grid::new([4, 4, 10], [1.0; 3]);
        let case = CaseInput {
            id: "c".into(),
            image: Volume::single(grid, "flair", vec![0.0; grid.len()]),
            brain_mask: LabelVolume {
                grid,
                data: vec![1u8; grid.len()].into(),
            },
        };
        let mut gt = LabelVolume::zeros(grid);
        for z in 1..9 {
            gt.data[grid.index(0, 0, z)] = 1;
        }
        for x in 0..4 {
            gt.data[grid.index(x, 1, 7)] = 1;
        }
        let mut input = MontageInput::new(&case);
        input.contours.push(Contour {
            name: "gt",
            labels: &gt,
            colour: [255, 0, 255],
        });
        let s = choose_slices(&input, 3);
        assert_eq!(s.len(), 3);
        assert!(s.contains(&7), "{s:?}");
        assert!(s.iter().all(|z| (1..9).contains(z)));
    }
}
