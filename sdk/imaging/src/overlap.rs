//! Overlap measures and bounding boxes of binary masks.

use crate::Dims3;

/// Voxel counts of two binary masks (nonzero = set) and of their overlap,
/// from which Dice, precision and recall follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlapCounts {
    /// `|A ∩ B|`.
    pub both: u64,
    /// `|A|`.
    pub a: u64,
    /// `|B|`.
    pub b: u64,
}

impl OverlapCounts {
    /// Counts the voxels of `a`, `b` and both.
    pub fn of(a: &[u8], b: &[u8]) -> Self {
        assert_eq!(a.len(), b.len(), "overlap of masks of different sizes");
        // Counted per block in 32-bit lanes (which the compiler vectorises),
        // then summed in 64 bits (bench/results/suite.md times it).
        let (mut both, mut sa, mut sb) = (0u64, 0u64, 0u64);
        for (ca, cb) in a.chunks(1 << 16).zip(b.chunks(1 << 16)) {
            let (mut i, mut x, mut y) = (0u32, 0u32, 0u32);
            for (&p, &q) in ca.iter().zip(cb) {
                let (p, q) = (u32::from(p != 0), u32::from(q != 0));
                i += p & q;
                x += p;
                y += q;
            }
            both += u64::from(i);
            sa += u64::from(x);
            sb += u64::from(y);
        }
        Self { both, a: sa, b: sb }
    }

    /// `2|A∩B| / (|A|+|B|)`; two empty masks agree perfectly: 1.0.
    pub fn dice(&self) -> f64 {
        if self.a + self.b == 0 {
            1.0
        } else {
            2.0 * self.both as f64 / (self.a + self.b) as f64
        }
    }

    /// `|A∩B| / |A|`: the fraction of `a` that lies in `b` (precision of
    /// `a` as a prediction of `b`); `None` when `a` is empty.
    pub fn precision(&self) -> Option<f64> {
        (self.a > 0).then(|| self.both as f64 / self.a as f64)
    }

    /// `|A∩B| / |B|`: the fraction of `b` that `a` covers (recall,
    /// sensitivity); `None` when `b` is empty.
    pub fn recall(&self) -> Option<f64> {
        (self.b > 0).then(|| self.both as f64 / self.b as f64)
    }
}

/// Dice coefficient `2|A∩B| / (|A|+|B|)` of two binary masks (nonzero =
/// set). Two empty masks agree perfectly: 1.0.
pub fn dice(a: &[u8], b: &[u8]) -> f64 {
    OverlapCounts::of(a, b).dice()
}

/// Inclusive pixel bounding box of a 2D mask: `[x0, y0, x1, y1]`.
pub fn bbox_2d(mask: &[u8], width: usize) -> Option<[usize; 4]> {
    let mut bb: Option<[usize; 4]> = None;
    for (i, _) in mask.iter().enumerate().filter(|(_, &v)| v != 0) {
        let (x, y) = (i % width, i / width);
        bb = Some(match bb {
            None => [x, y, x, y],
            Some([x0, y0, x1, y1]) => [x0.min(x), y0.min(y), x1.max(x), y1.max(y)],
        });
    }
    bb
}

/// Inclusive voxel bounding box of a volume's nonzero voxels: `(min, max)`.
pub fn bbox_3d(mask: &[u8], dims: Dims3) -> Option<([usize; 3], [usize; 3])> {
    let [nx, ny, _] = dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for (i, _) in mask.iter().enumerate().filter(|(_, &v)| v != 0) {
        let p = [i % nx, (i / nx) % ny, i / (nx * ny)];
        for d in 0..3 {
            lo[d] = lo[d].min(p[d]);
            hi[d] = hi[d].max(p[d]);
        }
        any = true;
    }
    any.then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_edge_cases() {
        assert_eq!(dice(&[0, 0], &[0, 0]), 1.0);
        assert_eq!(dice(&[1, 0], &[0, 0]), 0.0);
        assert!((dice(&[1, 1, 0], &[1, 0, 0]) - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn precision_and_recall_of_a_prediction() {
        // a = prediction (4 voxels), b = truth (2 voxels), 1 shared.
        let c = OverlapCounts::of(&[1, 1, 1, 1, 0, 0], &[0, 0, 0, 1, 1, 0]);
        assert_eq!(
            c,
            OverlapCounts {
                both: 1,
                a: 4,
                b: 2
            }
        );
        assert_eq!(c.precision(), Some(0.25));
        assert_eq!(c.recall(), Some(0.5));
        assert!((c.dice() - 2.0 / 6.0).abs() < 1e-12);
        let empty = OverlapCounts::of(&[0, 0], &[1, 0]);
        assert_eq!((empty.precision(), empty.recall()), (None, Some(0.0)));
    }

    #[test]
    fn boxes() {
        let m = [0, 0, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(bbox_2d(&m, 3), Some([1, 1, 2, 2]));
        assert_eq!(bbox_2d(&[0; 4], 2), None);
        assert_eq!(bbox_3d(&m, [3, 3, 1]), Some(([1, 1, 0], [2, 2, 0])));
    }
}
