//! Deterministic noise for the synthetic generator: a counter-based hash
//! (independent of thread scheduling) and smooth 3D value noise.

/// SplitMix64 finaliser: a well-mixed 64-bit hash of `x`.
#[inline]
pub(crate) fn hash64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Uniform in [0, 1) from a hash.
#[inline]
pub fn unit(h: u64) -> f32 {
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// An approximately standard normal value from one 64-bit hash (sum of four
/// 16-bit uniforms, rescaled; the tails are short, which is fine for noise).
#[inline]
pub fn gauss(h: u64) -> f32 {
    let s = (h & 0xFFFF) + ((h >> 16) & 0xFFFF) + ((h >> 32) & 0xFFFF) + (h >> 48);
    // Mean 2 * 65535, variance 4 * 65536^2 / 12.
    (s as f32 - 131_070.0) / 37_837.0
}

/// Smooth value noise in [-1, 1]: random values on a lattice of spacing
/// `wavelength` (in the caller's coordinates), blended with a smoothstep.
#[derive(Clone)]
pub(crate) struct ValueNoise {
    values: Vec<f32>,
    dims: [usize; 3],
    origin: [f32; 3],
    inv: f32,
}

impl ValueNoise {
    /// Noise covering the box `[lo, hi]` (inclusive, any units) with the given
    /// wavelength, from `seed`.
    pub(crate) fn new(seed: u64, lo: [f32; 3], hi: [f32; 3], wavelength: f32) -> Self {
        let inv = 1.0 / wavelength.max(1e-3);
        let dims = [0, 1, 2].map(|d| (((hi[d] - lo[d]) * inv).ceil().max(0.0) as usize) + 3);
        let n = dims[0] * dims[1] * dims[2];
        let values = (0..n as u64)
            .map(|i| unit(hash64(seed ^ hash64(i))) * 2.0 - 1.0)
            .collect();
        Self {
            values,
            dims,
            origin: lo.map(|v| v - wavelength),
            inv,
        }
    }

    /// The noise at `p` (clamped to the covered box).
    #[inline]
    pub(crate) fn at(&self, p: [f32; 3]) -> f32 {
        let mut i = [0usize; 3];
        let mut t = [0f32; 3];
        for d in 0..3 {
            let u =
                ((p[d] - self.origin[d]) * self.inv).clamp(0.0, (self.dims[d] - 2) as f32 - 1e-3);
            let f = u.floor();
            i[d] = f as usize;
            let r = u - f;
            t[d] = r * r * (3.0 - 2.0 * r);
        }
        let [nx, ny, _] = self.dims;
        let base = i[0] + nx * (i[1] + ny * i[2]);
        let v = &self.values;
        let lerp = |a: f32, b: f32, w: f32| a + (b - a) * w;
        let (sy, sz) = (nx, nx * ny);
        let c00 = lerp(v[base], v[base + 1], t[0]);
        let c10 = lerp(v[base + sy], v[base + sy + 1], t[0]);
        let c01 = lerp(v[base + sz], v[base + sz + 1], t[0]);
        let c11 = lerp(v[base + sy + sz], v[base + sy + sz + 1], t[0]);
        lerp(lerp(c00, c10, t[1]), lerp(c01, c11, t[1]), t[2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_smooth_bounded_and_deterministic() {
        let a = ValueNoise::new(1, [0.0; 3], [50.0; 3], 10.0);
        let b = ValueNoise::new(1, [0.0; 3], [50.0; 3], 10.0);
        let mut prev = a.at([0.0, 5.0, 5.0]);
        for k in 1..500 {
            let p = [k as f32 * 0.1, 5.0, 5.0];
            let v = a.at(p);
            assert!((-1.0..=1.0).contains(&v));
            assert!((v - prev).abs() < 0.1, "jump at {k}");
            assert_eq!(v, b.at(p));
            prev = v;
        }
        let g: Vec<f32> = (0..20000u64).map(|i| gauss(hash64(i))).collect();
        let m = g.iter().sum::<f32>() / g.len() as f32;
        let s = (g.iter().map(|x| (x - m).powi(2)).sum::<f32>() / g.len() as f32).sqrt();
        assert!(m.abs() < 0.03 && (s - 1.0).abs() < 0.03, "{m} {s}");
    }
}
