//! Intensity statistics and mappings.

/// Linear min-max mapping to 0..=255 (rounded). A constant image maps to 0.
/// This is the faithful 8-bit conversion of a float slice (CLISC's released
/// code clipped z-scored values instead).
pub fn minmax_to_u8(values: &[f32]) -> Vec<u8> {
    let (lo, hi) = min_max(values);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![0; values.len()];
    }
    let scale = 255.0 / (hi - lo);
    values
        .iter()
        .map(|&v| ((v - lo) * scale).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Minimum and maximum (NaN-free input assumed); `(0, 0)` when empty.
pub fn min_max(values: &[f32]) -> (f32, f32) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Histogram equalisation of an 8-bit image, identical to OpenCV's
/// `cv2.equalizeHist` (used by CLISC before SAM).
pub fn equalize_histogram(values: &[u8]) -> Vec<u8> {
    let mut hist = [0usize; 256];
    for &v in values {
        hist[v as usize] += 1;
    }
    let total = values.len();
    let Some(first) = hist.iter().position(|&h| h != 0) else {
        return Vec::new();
    };
    if hist[first] == total {
        return vec![first as u8; total];
    }
    let scale = 255.0f32 / (total - hist[first]) as f32;
    let mut lut = [0u8; 256];
    let mut sum = 0usize;
    for i in first + 1..256 {
        sum += hist[i];
        lut[i] = round_half_even(sum as f32 * scale).clamp(0.0, 255.0) as u8;
    }
    values.iter().map(|&v| lut[v as usize]).collect()
}

fn round_half_even(v: f32) -> f32 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - v.signum()
    } else {
        r
    }
}

/// The `q`-th percentile (0..=100) with linear interpolation between order
/// statistics (NumPy's default). `values` is reordered.
pub fn percentile(values: &mut [f32], q: f64) -> f32 {
    assert!(!values.is_empty(), "percentile of nothing");
    let pos = (q.clamp(0.0, 100.0) / 100.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let (_, &mut a, _) = values.select_nth_unstable_by(lo, f32::total_cmp);
    let a = a as f64;
    if hi == lo {
        return a as f32;
    }
    // The upper neighbour is the minimum of the part above `lo`.
    let b = values[lo + 1..]
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min) as f64;
    (a + (b - a) * (pos - lo as f64)) as f32
}

/// Mean and population standard deviation (f64 accumulation).
pub fn mean_std(values: &[f32]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// Otsu's threshold over `bins` histogram bins between min and max:
/// the value maximising the between-class variance.
pub fn otsu_threshold(values: &[f32], bins: usize) -> f32 {
    let (lo, hi) = min_max(values);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return lo;
    }
    let width = (hi - lo) / bins as f32;
    let mut hist = vec![0f64; bins];
    for &v in values {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        hist[b] += 1.0;
    }
    let total: f64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(i, h)| i as f64 * h).sum();
    let (mut w0, mut sum0, mut best, mut best_t) = (0.0, 0.0, -1.0, 0usize);
    for (t, &h) in hist.iter().enumerate() {
        w0 += h;
        sum0 += t as f64 * h;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let m0 = sum0 / w0;
        let m1 = (sum_all - sum0) / w1;
        let between = w0 * w1 * (m0 - m1).powi(2);
        if between > best {
            best = between;
            best_t = t;
        }
    }
    lo + width * (best_t as f32 + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_maps_to_full_range() {
        assert_eq!(minmax_to_u8(&[-1.0, 0.0, 1.0]), vec![0, 128, 255]);
        assert_eq!(minmax_to_u8(&[3.0, 3.0]), vec![0, 0]);
    }

    #[test]
    fn equalisation_matches_opencv_on_a_small_case() {
        // cv2.equalizeHist(np.array([[0,0,1,2]], np.uint8)) == [[0,0,128,255]]
        assert_eq!(equalize_histogram(&[0, 0, 1, 2]), vec![0, 0, 128, 255]);
        assert_eq!(equalize_histogram(&[7, 7]), vec![7, 7]);
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        // np.percentile([1,2,3,4], 90) == 3.7
        assert!((percentile(&mut v, 90.0) - 3.7).abs() < 1e-6);
        let mut v = vec![5.0];
        assert_eq!(percentile(&mut v, 99.9), 5.0);
    }

    #[test]
    fn otsu_separates_two_modes() {
        let mut v = vec![0.0f32; 100];
        v.extend(vec![10.0f32; 50]);
        let t = otsu_threshold(&v, 256);
        assert!(t > 0.0 && t <= 10.0, "{t}");
    }
}
