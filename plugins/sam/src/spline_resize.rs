//! MedSAM's image resize: `skimage.transform.resize(img, (1024, 1024),
//! order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)`.
//!
//! For an enlargement (every MRI slice up to 1024 pixels a side) that is
//! `scipy.ndimage.zoom(order=3, mode="mirror", grid_mode=True)`: a cubic
//! B-spline fitted to the image (recursive prefilter, pole sqrt(3) - 2,
//! mirror boundaries), evaluated at output pixel centres mapped to input
//! pixel centres (`(o + 0.5) * in / out - 0.5`), clipped to the input's
//! range, then truncated to uint8 (numpy's `astype`). The anti-aliasing
//! Gaussian has sigma `max(0, (in / out - 1) / 2)`, zero for an
//! enlargement, so it does nothing here; shrinking is not supported.
//!
//! Computed in f64 like scipy, but not in scipy's exact order of
//! operations, so a value that lands within an ulp of an integer can
//! truncate to the integer below where scipy's does not (or the reverse):
//! the parity test allows one grey level on a few pixels.

/// The cubic B-spline pole.
fn pole() -> f64 {
    3f64.sqrt() - 2.0
}

/// Turns samples into cubic B-spline coefficients in place (mirror
/// boundaries, as scipy's `spline_filter1d(mode="mirror")`).
fn prefilter(c: &mut [f64]) {
    let n = c.len();
    if n < 2 {
        return;
    }
    let z = pole();
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    c.iter_mut().for_each(|v| *v *= gain);
    // Causal initialisation for a mirror-symmetric extension.
    let z_n_1 = z.powi(n as i32 - 1);
    let mut z_i = z;
    c[0] += z_n_1 * c[n - 1];
    for i in 1..n - 1 {
        c[0] += z_i * (c[i] + z_n_1 * c[n - 1 - i]);
        z_i *= z;
    }
    c[0] /= 1.0 - z_n_1 * z_n_1;
    for i in 1..n {
        c[i] += z * c[i - 1];
    }
    c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1.0);
    for i in (0..n - 1).rev() {
        c[i] = z * (c[i + 1] - c[i]);
    }
}

/// A mirror-extended index into `0..n`.
fn mirror(i: i64, n: usize) -> usize {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let period = 2 * n - 2;
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

/// The four input indices and cubic B-spline weights for coordinate `x`
/// on an axis of `n` samples.
fn taps(x: f64, n: usize) -> ([usize; 4], [f64; 4]) {
    let floor = x.floor();
    let t = x - floor;
    let weights = [
        (1.0 - t).powi(3) / 6.0,
        (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0,
        (1.0 + 3.0 * t + 3.0 * t * t - 3.0 * t * t * t) / 6.0,
        t * t * t / 6.0,
    ];
    let start = floor as i64 - 1;
    let index = [0, 1, 2, 3].map(|k| mirror(start + k, n));
    (index, weights)
}

/// Where output index `o` of `out` samples falls on an axis of `n` input
/// samples (pixel centres matched, `grid_mode=True`).
fn source_coordinate(o: usize, n: usize, out: usize) -> f64 {
    (o as f64 + 0.5) * (n as f64 / out as f64) - 0.5
}

/// MedSAM's resize of a grey `w x h` image to `nw x nh` (see the module
/// documentation). `None` when it would shrink an axis.
pub fn medsam_resize(grey: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Option<Vec<u8>> {
    if nw < w || nh < h || grey.len() != w * h || w == 0 || h == 0 {
        return None;
    }
    let mut coef: Vec<f64> = grey.iter().map(|&v| f64::from(v)).collect();
    // Along y (scipy's axis 0) first, then along x.
    let mut column = vec![0.0; h];
    for x in 0..w {
        (0..h).for_each(|y| column[y] = coef[y * w + x]);
        prefilter(&mut column);
        (0..h).for_each(|y| coef[y * w + x] = column[y]);
    }
    for row in coef.chunks_mut(w) {
        prefilter(row);
    }
    let lo = f64::from(*grey.iter().min().expect("not empty"));
    let hi = f64::from(*grey.iter().max().expect("not empty"));
    let xs: Vec<_> = (0..nw)
        .map(|o| taps(source_coordinate(o, w, nw), w))
        .collect();
    let mut out = Vec::with_capacity(nw * nh);
    for oy in 0..nh {
        let (yi, yw) = taps(source_coordinate(oy, h, nh), h);
        for (xi, xw) in &xs {
            let mut v = 0.0;
            for j in 0..4 {
                let row = &coef[yi[j] * w..(yi[j] + 1) * w];
                let along_x: f64 = (0..4).map(|i| xw[i] * row[xi[i]]).sum();
                v += yw[j] * along_x;
            }
            // Clipped to the input's range, then numpy's astype(uint8).
            out.push(v.clamp(lo, hi) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spline_interpolates_its_samples_and_keeps_constants() {
        // Zoom 1: output centres are the input centres.
        let img: Vec<u8> = (0..35).map(|v| (v * 7 % 251) as u8).collect();
        let same = medsam_resize(&img, 7, 5, 7, 5).unwrap();
        let off: Vec<i32> = img
            .iter()
            .zip(&same)
            .map(|(&a, &b)| a as i32 - b as i32)
            .collect();
        assert!(off.iter().all(|d| (0..=1).contains(d)), "{off:?}");
        let flat = medsam_resize(&[200u8; 12], 4, 3, 16, 12).unwrap();
        assert!(flat.iter().all(|&v| v == 199 || v == 200), "{flat:?}");
        assert!(medsam_resize(&img, 7, 5, 6, 5).is_none());
    }

    #[test]
    fn mirror_indices_reflect_about_the_edge_samples() {
        assert_eq!(
            [-2, -1, 0, 4, 5, 6].map(|i| mirror(i, 5)),
            [2, 1, 0, 4, 3, 2]
        );
    }
}
