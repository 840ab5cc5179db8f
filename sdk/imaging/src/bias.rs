//! Bias-field correction: removes the slow multiplicative intensity
//! drift of MR coils (the "bias field") from a volume.
//!
//! Why: FLAIR hyperintensity is what the weight-free stages look for, and a
//! field of +-20% makes grey matter on the bright side of a scan as bright
//! as a faint lesion on the dark side. N4 (the usual tool) is a large
//! B-spline fit; a low-order polynomial captures the smooth fields of
//! head coils well enough for this, in a few milliseconds.
//!
//! Method: the logarithm of the brain's intensities is fitted with a
//! polynomial of total degree [`DEGREE`] in x, y, z by least squares,
//! robustly: the first fit leaves out the darkest 5% (CSF, partial volume
//! at the brain's edge); each of the three refits uses the voxels within
//! two robust SDs of the previous fit (which leaves out lesions, vessels
//! and, again, most CSF; the robust SD is taken over the voxels the
//! previous fit used). The volume is
//! divided by the exponential of the fit, centred so that the brain's mean
//! log intensity does not change.

use crate::Dims3;

/// Total degree of the polynomial fitted to the log intensities.
pub const DEGREE: usize = 3;

/// Monomials of total degree at most [`DEGREE`] in three variables.
const TERMS: usize = (DEGREE + 1) * (DEGREE + 2) * (DEGREE + 3) / 6;

/// Robust refits after the first one.
const REFITS: usize = 3;

/// Fewest brain voxels per polynomial term for a fit to be attempted.
const VOXELS_PER_TERM: usize = 50;

/// Divides `values` (x-fastest over `dims`) by a smooth polynomial field
/// fitted to the brain's log intensities (`brain` nonzero). Voxels outside
/// the brain are left unchanged. Returns `false`, changing nothing, when
/// the brain has too few positive voxels to fit the field.
pub fn correct_polynomial(values: &mut [f32], brain: &[u8], dims: Dims3) -> bool {
    assert_eq!(
        values.len(),
        dims[0] * dims[1] * dims[2],
        "values do not match dims"
    );
    assert_eq!(
        brain.len(),
        values.len(),
        "brain mask does not match values"
    );
    let voxels: Vec<usize> = (0..values.len())
        .filter(|&i| brain[i] != 0 && values[i] > 0.0 && values[i].is_finite())
        .collect();
    if voxels.len() < VOXELS_PER_TERM * TERMS {
        return false;
    }
    let basis = Basis::new(&voxels, dims);
    let logs: Vec<f64> = voxels.iter().map(|&i| (values[i] as f64).ln()).collect();
    let mut use_voxel = above_quantile(&logs, 0.05);
    let Some(mut c) = basis.fit(&voxels, &logs, &use_voxel) else {
        return false;
    };
    for _ in 0..REFITS {
        let inliers = within_two_robust_sds(&voxels, &logs, &basis, &c, &use_voxel);
        match basis.fit(&voxels, &logs, &inliers) {
            Some(refit) => (c, use_voxel) = (refit, inliers),
            None => break,
        }
    }
    let field: Vec<f64> = voxels.iter().map(|&i| basis.eval(i, &c)).collect();
    let centre = field.iter().sum::<f64>() / field.len() as f64;
    for (&i, f) in voxels.iter().zip(&field) {
        values[i] = (values[i] as f64 / (f - centre).exp()) as f32;
    }
    true
}

/// `true` for the values above the `q` quantile.
fn above_quantile(v: &[f64], q: f64) -> Vec<bool> {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let cut = sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    v.iter().map(|&x| x > cut).collect()
}

/// The voxels whose residual to the fit is within two robust SDs (1.4826
/// x the median absolute residual of the voxels `used` by that fit).
fn within_two_robust_sds(
    voxels: &[usize],
    logs: &[f64],
    basis: &Basis,
    c: &[f64],
    used: &[bool],
) -> Vec<bool> {
    let residuals: Vec<f64> = voxels
        .iter()
        .zip(logs)
        .map(|(&i, &y)| y - basis.eval(i, c))
        .collect();
    let mut abs_used: Vec<f64> = residuals
        .iter()
        .zip(used)
        .filter(|(_, &u)| u)
        .map(|(r, _)| r.abs())
        .collect();
    abs_used.sort_by(f64::total_cmp);
    let sd = 1.4826 * abs_used[abs_used.len() / 2];
    residuals.iter().map(|r| r.abs() <= 2.0 * sd).collect()
}

/// Monomials x^a y^b z^c (a + b + c <= [`DEGREE`]) of coordinates
/// standardised over the brain, so the normal equations stay well
/// conditioned whatever the grid size.
struct Basis {
    dims: Dims3,
    mean: [f64; 3],
    scale: [f64; 3],
    exponents: [[i32; 3]; TERMS],
}

impl Basis {
    fn new(voxels: &[usize], dims: Dims3) -> Self {
        let mut mean = [0.0; 3];
        let mut square = [0.0; 3];
        for &i in voxels {
            let p = position(i, dims);
            for d in 0..3 {
                mean[d] += p[d];
                square[d] += p[d] * p[d];
            }
        }
        let n = voxels.len().max(1) as f64;
        let mut scale = [1.0; 3];
        for d in 0..3 {
            mean[d] /= n;
            let var = square[d] / n - mean[d] * mean[d];
            scale[d] = if var > 1e-12 { 1.0 / var.sqrt() } else { 0.0 };
        }
        let mut exponents = [[0; 3]; TERMS];
        let degree = DEGREE as i32;
        let all = (0..=degree).flat_map(|a| {
            (0..=degree - a).flat_map(move |b| (0..=degree - a - b).map(move |c| [a, b, c]))
        });
        for (slot, e) in exponents.iter_mut().zip(all) {
            *slot = e;
        }
        Self {
            dims,
            mean,
            scale,
            exponents,
        }
    }

    /// The basis functions at voxel `i` (on the stack: this runs for every
    /// brain voxel in every fit and residual pass).
    fn row(&self, i: usize) -> [f64; TERMS] {
        let p = position(i, self.dims);
        let u: [f64; 3] = std::array::from_fn(|d| (p[d] - self.mean[d]) * self.scale[d]);
        self.exponents
            .map(|e| u[0].powi(e[0]) * u[1].powi(e[1]) * u[2].powi(e[2]))
    }

    fn eval(&self, i: usize, c: &[f64]) -> f64 {
        self.row(i).iter().zip(c).map(|(a, b)| a * b).sum()
    }

    /// Least-squares coefficients over the voxels with `use_voxel`, or
    /// `None` when the normal equations are singular (too few voxels).
    fn fit(&self, voxels: &[usize], logs: &[f64], use_voxel: &[bool]) -> Option<Vec<f64>> {
        let n = TERMS;
        let mut ata = vec![0.0; n * n];
        let mut aty = vec![0.0; n];
        let mut count = 0;
        for ((&i, &y), _) in voxels.iter().zip(logs).zip(use_voxel).filter(|(_, &u)| u) {
            let row = self.row(i);
            for r in 0..n {
                aty[r] += row[r] * y;
                for c in r..n {
                    ata[r * n + c] += row[r] * row[c];
                }
            }
            count += 1;
        }
        if count < VOXELS_PER_TERM * n {
            return None;
        }
        for r in 0..n {
            for c in 0..r {
                ata[r * n + c] = ata[c * n + r];
            }
        }
        solve(ata, aty, n)
    }
}

fn position(i: usize, dims: Dims3) -> [f64; 3] {
    let x = i % dims[0];
    let y = (i / dims[0]) % dims[1];
    let z = i / (dims[0] * dims[1]);
    [x as f64, y as f64, z as f64]
}

/// Solves the `n x n` system `a x = b` by Gaussian elimination with
/// partial pivoting; `None` when `a` is (numerically) singular.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    let largest = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&r, &s| a[r * n + col].abs().total_cmp(&a[s * n + col].abs()))?;
        if a[pivot * n + col].abs() <= largest * 1e-12 {
            return None;
        }
        if pivot != col {
            for k in 0..n {
                a.swap(pivot * n + k, col * n + k);
            }
            b.swap(pivot, col);
        }
        for r in col + 1..n {
            let f = a[r * n + col] / a[col * n + col];
            for k in col..n {
                a[r * n + k] -= f * a[col * n + k];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * n + r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 40 x 36 x 24 "brain" ellipsoid of two tissues (1.0 and 1.3 in
    /// alternating 3-voxel slabs along x), a bright lesion (2.0) and CSF-dark
    /// voxels, multiplied by a smooth field of +-25%.
    fn phantom() -> (Vec<f32>, Vec<f32>, Vec<u8>, Dims3) {
        let dims = [40, 36, 24];
        let n = dims[0] * dims[1] * dims[2];
        let (mut truth, mut biased, mut brain) = (vec![0.0; n], vec![0.0; n], vec![0u8; n]);
        for i in 0..n {
            let [x, y, z] = position(i, dims);
            let (u, v, w) = ((x - 19.5) / 19.0, (y - 17.5) / 17.0, (z - 11.5) / 11.0);
            if u * u + v * v + w * w > 1.0 {
                continue;
            }
            brain[i] = 1;
            let tissue = if (x as usize / 3) % 2 == 0 { 1.0 } else { 1.3 };
            let lesion = (x - 26.0).powi(2) + (y - 20.0).powi(2) + (z - 12.0).powi(2) < 16.0;
            let csf = (x - 12.0).abs() < 2.0 && (y - 17.0).abs() < 6.0;
            truth[i] = if lesion {
                2.0
            } else if csf {
                0.2
            } else {
                tissue
            };
            let field = (0.22 * u - 0.15 * v * v + 0.1 * u * w + 0.08 * w).exp();
            biased[i] = (truth[i] as f64 * field) as f32;
        }
        (truth, biased, brain, dims)
    }

    /// Coefficient of variation of `values / truth` over the brain: 0 when
    /// the values are the truth up to one global factor.
    fn ratio_spread(values: &[f32], truth: &[f32], brain: &[u8]) -> f64 {
        let r: Vec<f64> = (0..values.len())
            .filter(|&i| brain[i] != 0)
            .map(|i| values[i] as f64 / truth[i] as f64)
            .collect();
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        (r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / r.len() as f64).sqrt() / mean
    }

    #[test]
    fn removes_a_smooth_field_and_keeps_the_contrast() {
        let (truth, mut values, brain, dims) = phantom();
        let before = ratio_spread(&values, &truth, &brain);
        assert!(correct_polynomial(&mut values, &brain, dims));
        let after = ratio_spread(&values, &truth, &brain);
        assert!(before > 0.08, "phantom field too weak: {before}");
        assert!(
            after < 0.01,
            "field left after correction: {after} (before {before})"
        );
    }

    #[test]
    fn leaves_the_background_alone_and_refuses_a_tiny_brain() {
        let (_, mut values, brain, dims) = phantom();
        let outside: Vec<usize> = (0..values.len()).filter(|&i| brain[i] == 0).collect();
        for &i in &outside {
            values[i] = 7.0;
        }
        correct_polynomial(&mut values, &brain, dims);
        assert!(outside.iter().all(|&i| values[i] == 7.0));

        let mut tiny = vec![1.0f32; 8];
        let before = tiny.clone();
        assert!(!correct_polynomial(&mut tiny, &[1; 8], [2, 2, 2]));
        assert_eq!(tiny, before);
    }

    #[test]
    fn solves_a_small_system_and_detects_a_singular_one() {
        let x = solve(vec![2.0, 1.0, 1.0, 3.0], vec![3.0, 5.0], 2).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert!(solve(vec![1.0, 2.0, 2.0, 4.0], vec![1.0, 2.0], 2).is_none());
    }
}
