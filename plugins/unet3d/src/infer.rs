//! Whole-case prediction: Gaussian-weighted sliding windows at native
//! resolution (default) or the reference code's resize-to-N^3, either
//! optionally averaged over mirrored copies of the input (`mirroring`).
//!
//! In sliding mode the device only ever holds `window_batch` windows; the
//! volume-sized accumulators live in host memory.

use super::config::{InferenceMode, Mirroring, UNetConfig};
use super::train::Model;
use clisc_imaging::components::largest_component;
use clisc_imaging::Connectivity;
use tch::{Kind, Tensor};

/// The binary segmentation of `image` (`dims` = x, y, z): the voxels of
/// [`predict_probability`] above one half.
pub(crate) fn predict_labels(
    model: &Model,
    cfg: &UNetConfig,
    image: &[f32],
    brain: &[u8],
    dims: [usize; 3],
) -> Vec<u8> {
    predict_probability(model, cfg, image, brain, dims)
        .iter()
        .map(|&p| u8::from(p > 0.5))
        .collect()
}

/// The foreground probability of every voxel of `image` (`dims` = x, y,
/// z), 0 outside `brain`; with `cfg.largest_component`, voxels above one
/// half outside the largest 3D component of those voxels get 0 (the
/// ones at or below one half keep their value: they shape the component's
/// border when the host interpolates the probabilities). The volume's
/// minimum (background after z-scoring) fills any padding.
pub fn predict_probability(
    model: &Model,
    cfg: &UNetConfig,
    image: &[f32],
    brain: &[u8],
    dims: [usize; 3],
) -> Vec<f32> {
    let pad = image.iter().copied().fold(f32::INFINITY, f32::min);
    let pad = if pad.is_finite() { pad } else { 0.0 };
    let mut prob = foreground_probability(model, cfg, image, dims, pad);
    restrict(&mut prob, brain, dims, cfg.largest_component);
    prob
}

/// Sets the probability outside `brain` to 0 and, with `largest_only`,
/// that of the voxels above one half outside the largest 3D component of
/// such voxels.
fn restrict(prob: &mut [f32], brain: &[u8], dims: [usize; 3], largest_only: bool) {
    for (p, &b) in prob.iter_mut().zip(brain) {
        if b == 0 {
            *p = 0.0;
        }
    }
    if largest_only {
        let labels: Vec<u8> = prob.iter().map(|&p| u8::from(p > 0.5)).collect();
        let kept = largest_component(&labels, dims, Connectivity::Full);
        for ((p, &was), &is) in prob.iter_mut().zip(&labels).zip(&kept) {
            if was != 0 && is == 0 {
                *p = 0.0;
            }
        }
    }
}

/// Window origins along one axis of length `dim` (>= `window`) so that
/// neighbours overlap by at least `overlap` and the last window ends at
/// the edge (nnU-Net's spacing).
pub(crate) fn window_starts(dim: usize, window: usize, overlap: f64) -> Vec<usize> {
    assert!(dim >= window && window > 0);
    let step = ((window as f64) * (1.0 - overlap)).floor().max(1.0);
    let span = (dim - window) as f64;
    let n = (span / step).ceil() as usize + 1;
    if n == 1 {
        return vec![0];
    }
    (0..n)
        .map(|i| ((i as f64) * span / (n - 1) as f64).round() as usize)
        .collect()
}

/// Separable Gaussian importance map over a window `[x, y, z]` (x fastest),
/// sigma = 1/8 of the window, maximum 1, no zeros (nnU-Net's weighting).
pub(crate) fn gaussian_map(window: [usize; 3]) -> Vec<f32> {
    let axis = |w: usize| -> Vec<f64> {
        let c = (w as f64 - 1.0) / 2.0;
        let s = (w as f64 / 8.0).max(1e-3);
        (0..w)
            .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * s * s)).exp())
            .collect()
    };
    let (gx, gy, gz) = (axis(window[0]), axis(window[1]), axis(window[2]));
    let mut out = Vec::with_capacity(window.iter().product());
    for z in &gz {
        for y in &gy {
            for x in &gx {
                out.push((x * y * z) as f32);
            }
        }
    }
    let max = out.iter().copied().fold(0.0f32, f32::max);
    let min_pos = out
        .iter()
        .copied()
        .filter(|&v| v > 0.0)
        .fold(f32::INFINITY, f32::min)
        / max;
    out.iter_mut().for_each(|v| *v = (*v / max).max(min_pos));
    out
}

/// Foreground probability of every voxel of `image` (`dims` = x, y, z),
/// `pad` filling the outside when the volume is smaller than the window;
/// the inference settings (mode, window = `patch_size`, overlap, ...) come
/// from `cfg`.
pub fn foreground_probability(
    model: &Model,
    cfg: &UNetConfig,
    image: &[f32],
    dims: [usize; 3],
    pad: f32,
) -> Vec<f32> {
    let _guard = tch::no_grad_guard();
    match cfg.inference {
        InferenceMode::Sliding => sliding(model, cfg, image, dims, pad),
        InferenceMode::Resize => resized(model, cfg, image, dims),
    }
}

/// Foreground probability `[B, 1, D, H, W]` of a batch on the model's
/// device; with mirroring, the mean over the flipped copies (each
/// prediction flipped back), which evens out orientation-dependent errors
/// of a network trained with random flips.
fn foreground(model: &Model, x: &Tensor, mirroring: Mirroring) -> Tensor {
    let predict = |x: &Tensor| {
        model
            .logits(x, false)
            .softmax(1, Kind::Float)
            .narrow(1, 1, 1)
    };
    let mut sum = predict(x);
    for dims in mirroring.flips() {
        sum += predict(&x.flip(*dims)).flip(*dims);
    }
    sum / (mirroring.flips().len() + 1) as f64
}

fn sliding(model: &Model, cfg: &UNetConfig, image: &[f32], dims: [usize; 3], pad: f32) -> Vec<f32> {
    let window = cfg.patch_size.map(|v| v as usize);
    let padded = [0, 1, 2].map(|d| dims[d].max(window[d]));
    // Pad at the far end only when the volume is smaller than the window.
    let source: Vec<f32> = if padded == dims {
        image.to_vec()
    } else {
        let mut v = vec![pad; padded.iter().product()];
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                let src = dims[0] * (y + dims[1] * z);
                let dst = padded[0] * (y + padded[1] * z);
                v[dst..dst + dims[0]].copy_from_slice(&image[src..src + dims[0]]);
            }
        }
        v
    };
    let starts: Vec<[usize; 3]> = {
        let (sx, sy, sz) = (
            window_starts(padded[0], window[0], cfg.overlap),
            window_starts(padded[1], window[1], cfg.overlap),
            window_starts(padded[2], window[2], cfg.overlap),
        );
        let mut all = Vec::new();
        for &z in &sz {
            for &y in &sy {
                for &x in &sx {
                    all.push([x, y, z]);
                }
            }
        }
        all
    };
    let gauss = gaussian_map(window);
    let wlen: usize = window.iter().product();
    let total: usize = padded.iter().product();
    let (mut acc, mut weight) = (vec![0f32; total], vec![0f32; total]);
    let [wx, wy, wz] = window;
    for chunk in starts.chunks(cfg.window_batch) {
        let mut buf = vec![0f32; chunk.len() * wlen];
        for (b, s) in chunk.iter().enumerate() {
            for z in 0..wz {
                for y in 0..wy {
                    let src = s[0] + padded[0] * (s[1] + y + padded[1] * (s[2] + z));
                    let dst = b * wlen + wx * (y + wy * z);
                    buf[dst..dst + wx].copy_from_slice(&source[src..src + wx]);
                }
            }
        }
        let x = Tensor::from_slice(&buf)
            .view([chunk.len() as i64, 1, wz as i64, wy as i64, wx as i64])
            .to_device(model.device());
        let p = foreground(model, &x, cfg.mirroring)
            .squeeze_dim(1)
            .to_device(tch::Device::Cpu)
            .contiguous();
        let probs: Vec<f32> =
            Vec::<f32>::try_from(p.flatten(0, -1)).expect("probabilities are f32");
        for (b, s) in chunk.iter().enumerate() {
            for z in 0..wz {
                for y in 0..wy {
                    let dst = s[0] + padded[0] * (s[1] + y + padded[1] * (s[2] + z));
                    let src = b * wlen + wx * (y + wy * z);
                    for i in 0..wx {
                        let g = gauss[src - b * wlen + i];
                        acc[dst + i] += probs[src + i] * g;
                        weight[dst + i] += g;
                    }
                }
            }
        }
    }
    let mut out = Vec::with_capacity(dims.iter().product());
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            let row = padded[0] * (y + padded[1] * z);
            out.extend((0..dims[0]).map(|x| acc[row + x] / weight[row + x].max(1e-12)));
        }
    }
    out
}

fn resized(model: &Model, cfg: &UNetConfig, image: &[f32], dims: [usize; 3]) -> Vec<f32> {
    let n = cfg.resize_size;
    let [nx, ny, nz] = dims.map(|v| v as i64);
    let x = Tensor::from_slice(image)
        .view([1, 1, nz, ny, nx])
        .to_device(model.device());
    let small = x.upsample_nearest3d([n, n, n], None, None, None);
    let p = foreground(model, &small, cfg.mirroring);
    let back = p
        .upsample_nearest3d([nz, ny, nx], None, None, None)
        .to_device(tch::Device::Cpu)
        .contiguous();
    Vec::<f32>::try_from(back.flatten(0, -1)).expect("probabilities are f32")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricting_keeps_the_brain_and_the_largest_component() {
        // Along a 10 x 1 x 1 line: a 3-voxel blob, a 1-voxel blob, a voxel
        // outside the brain; values at or below one half in between.
        let brain = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0];
        let prob = [0.9, 0.8, 0.7, 0.4, 0.6, 0.5, 0.2, 0.1, 0.3, 0.95];
        let mut kept = prob;
        restrict(&mut kept, &brain, [10, 1, 1], false);
        assert_eq!(kept, [0.9, 0.8, 0.7, 0.4, 0.6, 0.5, 0.2, 0.1, 0.3, 0.0]);
        restrict(&mut kept, &brain, [10, 1, 1], true);
        assert_eq!(kept, [0.9, 0.8, 0.7, 0.4, 0.0, 0.5, 0.2, 0.1, 0.3, 0.0]);
    }

    #[test]
    fn windows_cover_the_axis_and_overlap() {
        assert_eq!(window_starts(64, 64, 0.5), vec![0]);
        assert_eq!(window_starts(96, 64, 0.5), vec![0, 32]);
        let s = window_starts(100, 32, 0.5);
        assert_eq!(*s.first().unwrap(), 0);
        assert_eq!(*s.last().unwrap(), 68);
        assert!(
            s.windows(2).all(|w| w[1] - w[0] <= 16 && w[1] > w[0]),
            "{s:?}"
        );
        assert_eq!(window_starts(100, 32, 0.0).len(), 4);
    }

    #[test]
    fn gaussian_peaks_in_the_centre_and_never_vanishes() {
        let g = gaussian_map([8, 8, 4]);
        let at = |x: usize, y: usize, z: usize| g[x + 8 * (y + 8 * z)];
        assert!(at(4, 4, 2) > at(0, 4, 2));
        assert!(at(0, 0, 0) > 0.0);
        assert!(g.iter().all(|&v| v <= 1.0));
        assert!(
            (at(3, 3, 1) - at(4, 4, 2)).abs() < 1e-6,
            "symmetric around the centre"
        );
    }

    #[test]
    fn mirrored_prediction_is_flip_equivariant() {
        let base = UNetConfig {
            features: vec![2, 4],
            patch_size: [8, 8, 4],
            ..UNetConfig::default()
        };
        let model = Model::new(&base, tch::Device::Cpu, 3);
        let dims = [8, 8, 4];
        let image: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        // The volume mirrored along x, and along z (x fastest, 8 x 8 x 4).
        let flip_x =
            |v: &[f32]| -> Vec<f32> { (0..v.len()).map(|i| v[i - i % 8 + 7 - i % 8]).collect() };
        let flip_z = |v: &[f32]| -> Vec<f32> {
            (0..v.len())
                .map(|i| v[i % 64 + 64 * (3 - i / 64)])
                .collect()
        };
        let predict = |mirroring: Mirroring, v: &[f32]| {
            let cfg = UNetConfig {
                mirroring,
                ..base.clone()
            };
            foreground_probability(&model, &cfg, v, dims, -1.0)
        };
        let gap = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        // Predicting the mirrored volume = mirroring the prediction.
        let equivariance = |mode: Mirroring, flip: &dyn Fn(&[f32]) -> Vec<f32>| {
            gap(&flip(&predict(mode, &image)), &predict(mode, &flip(&image)))
        };
        assert!(equivariance(Mirroring::Axial, &flip_x) < 1e-5);
        assert!(equivariance(Mirroring::All, &flip_x) < 1e-5);
        assert!(equivariance(Mirroring::All, &flip_z) < 1e-5);
        // This random network is not symmetric by itself, so the checks
        // above are not vacuous.
        let plain = equivariance(Mirroring::Off, &flip_x);
        assert!(plain > 1e-4, "{plain}");
        let axial_along_z = equivariance(Mirroring::Axial, &flip_z);
        assert!(axial_along_z > 1e-4, "{axial_along_z}");
    }
}
