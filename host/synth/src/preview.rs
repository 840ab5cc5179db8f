//! Preview pictures of cases: for a few axial slices, the four modalities
//! and the labels side by side (one row per slice), as a PNG.

use super::{SynthCase, MODALITIES};
use image::{Rgb, RgbImage};
use std::path::Path;

/// BraTS label colours: 1 necrosis/core red, 2 oedema green, 4 enhancing yellow.
fn label_colour(l: u8) -> Option<[u8; 3]> {
    match l {
        1 => Some([230, 40, 40]),
        2 => Some([40, 200, 60]),
        4 => Some([250, 220, 40]),
        0 => None,
        _ => Some([80, 120, 255]),
    }
}

/// Axial slices worth showing: the slice with the most tumour, one above
/// and one below it by a quarter of the tumour's extent, and one slice
/// without tumour when there is one.
pub(crate) fn interesting_slices(case: &SynthCase) -> Vec<usize> {
    let n = case.grid.slice_len();
    let nz = case.grid.shape[2] as usize;
    let counts: Vec<usize> = (0..nz)
        .map(|z| {
            case.seg[z * n..(z + 1) * n]
                .iter()
                .filter(|&&l| l > 0)
                .count()
        })
        .collect();
    let best = (0..nz).max_by_key(|&z| counts[z]).unwrap_or(nz / 2);
    if counts[best] == 0 {
        return vec![nz * 3 / 10, nz / 2, nz * 7 / 10];
    }
    let zs: Vec<usize> = (0..nz).filter(|&z| counts[z] > 0).collect();
    let extent = zs.last().unwrap_or(&best) - zs.first().unwrap_or(&best);
    let step = (extent / 4).max(1);
    let mut out = vec![best.saturating_sub(step), best, (best + step).min(nz - 1)];
    let brain = |z: usize| {
        case.images[3][z * n..(z + 1) * n]
            .iter()
            .filter(|&&v| v > 0.0)
            .count()
    };
    let max_brain = (0..nz).map(brain).max().unwrap_or(0);
    if let Some(z) = (0..nz)
        .filter(|&z| counts[z] == 0 && brain(z) > max_brain / 2)
        .min_by_key(|&z| z.abs_diff(best))
    {
        out.push(z);
    }
    out.dedup();
    out
}

/// Renders `slices` of `case` as rows of [T1, T1ce, T2, FLAIR, labels over
/// FLAIR] tiles; each modality is scaled to its brain 99.5th percentile.
pub fn render(case: &SynthCase, slices: &[usize]) -> RgbImage {
    let [nx, ny, _] = case.grid.dims();
    let n = nx * ny;
    let scales: Vec<f32> = case
        .images
        .iter()
        .map(|img| {
            let mut v: Vec<f32> = img.iter().copied().filter(|&x| x > 0.0).collect();
            if v.is_empty() {
                1.0
            } else {
                clisc_imaging::intensity::percentile(&mut v, 99.5).max(1e-6)
            }
        })
        .collect();
    let gap = 2;
    let cols = MODALITIES.len() + 1;
    let mut out = RgbImage::from_pixel(
        ((nx + gap) * cols) as u32,
        ((ny + gap) * slices.len()) as u32,
        Rgb([0, 0, 0]),
    );
    for (row, &z) in slices.iter().enumerate() {
        for col in 0..cols {
            for y in 0..ny {
                for x in 0..nx {
                    let i = z * n + x + nx * y;
                    let m = col.min(3);
                    let g = ((case.images[m][i] / scales[m]).clamp(0.0, 1.0) * 255.0) as u8;
                    let mut px = [g, g, g];
                    if col == 4 {
                        if let Some(c) = label_colour(case.seg[i]) {
                            px = [0, 1, 2].map(|k| ((g as u16 * 2 + c[k] as u16 * 3) / 5) as u8);
                        }
                    }
                    out.put_pixel(
                        (col * (nx + gap) + x) as u32,
                        (row * (ny + gap) + y) as u32,
                        Rgb(px),
                    );
                }
            }
        }
    }
    out
}

/// Writes the preview of `interesting_slices` to `path` (PNG).
pub fn write_preview(case: &SynthCase, path: &Path) -> Result<(), image::ImageError> {
    render(case, &interesting_slices(case)).save(path)
}
