//! # clisc metrics
//!
//! Segmentation metrics: Dice, HD95 (mm), sensitivity, specificity, for
//! the whole tumour and the BraTS regions, and their summary over cases.
//!
//! HD95 follows MedPy's `hd95(result, reference, voxelspacing)` exactly:
//! the surface of a mask is the mask XOR its erosion by the 6-neighbour
//! (face-connected) structuring element (voxels outside the array count as
//! background); each surface voxel's distance to the other mask's surface
//! comes from an exact Euclidean distance transform with the voxel
//! spacing; HD95 is the 95th percentile (NumPy's linear interpolation) of
//! both directed distance sets concatenated. The transform is the separable
//! exact algorithm of Felzenszwalb and Huttenlocher, run only on the
//! bounding box of both masks (exact: every surface voxel lies in it).
//!
//! Edge cases (MedPy raises an error in both):
//! - both masks empty: Dice 1, HD95 0 (perfect agreement on "no tumour");
//! - exactly one mask empty: Dice 0, HD95 **undefined** (`None`; printed
//!   `n/a`, `null` in JSON, empty in CSV), never 0. Summaries average HD95
//!   over the cases where it is defined and report how many were not.
//!
//! Sensitivity = TP / (TP + FN) and specificity = TN / (TN + FP), over the
//! whole grid; each is `NaN` (undefined) when its denominator is 0.
#![warn(unreachable_pub)]

use clisc_sdk::{Grid, LabelVolume, PluginError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A tumour region scored separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Region {
    /// Whole tumour: every label > 0 (CLISC's target).
    #[serde(rename = "WT")]
    WholeTumour,
    /// Tumour core: labels 1 and 4.
    #[serde(rename = "TC")]
    TumourCore,
    /// Enhancing tumour: label 4.
    #[serde(rename = "ET")]
    Enhancing,
}

impl Region {
    /// Short name: `WT`, `TC`, `ET`.
    pub fn name(self) -> &'static str {
        match self {
            Region::WholeTumour => "WT",
            Region::TumourCore => "TC",
            Region::Enhancing => "ET",
        }
    }
    /// Whether a voxel label belongs to the region.
    pub fn contains(self, label: u8) -> bool {
        match self {
            Region::WholeTumour => label > 0,
            Region::TumourCore => label == 1 || label == 4,
            Region::Enhancing => label == 4,
        }
    }
}

/// The scores of one region of one case.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegionMetrics {
    /// Dice coefficient in [0, 1].
    pub dice: f64,
    /// 95th-percentile Hausdorff distance in mm; `None` when exactly one
    /// mask is empty.
    pub hd95: Option<f64>,
    /// TP / (TP + FN); NaN when the reference is empty.
    pub sensitivity: f64,
    /// TN / (TN + FP); NaN when the reference fills the grid.
    pub specificity: f64,
    /// Voxels in the prediction.
    pub pred_voxels: usize,
    /// Voxels in the reference.
    pub ref_voxels: usize,
}

/// Dice of two binary masks (nonzero = set); 1 when both are empty.
pub fn dice(pred: &[u8], reference: &[u8]) -> f64 {
    clisc_imaging::overlap::dice(pred, reference)
}

/// Surface voxels: set voxels with at least one unset (or outside) face
/// neighbour — MedPy's `mask ^ binary_erosion(mask, 6-connectivity)`.
fn surface(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let mut s = vec![false; mask.len()];
    for zz in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = x + nx * (y + ny * zz);
                if !mask[i] {
                    continue;
                }
                let interior = x > 0
                    && x + 1 < nx
                    && y > 0
                    && y + 1 < ny
                    && zz > 0
                    && zz + 1 < nz
                    && mask[i - 1]
                    && mask[i + 1]
                    && mask[i - nx]
                    && mask[i + nx]
                    && mask[i - nx * ny]
                    && mask[i + nx * ny];
                s[i] = !interior;
            }
        }
    }
    s
}

/// NumPy `percentile(values, q)` with linear interpolation (sorts `values`).
fn percentile_linear(values: &mut [f64], q: f64) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let pos = q / 100.0 * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// HD95 in mm between two binary masks (nonzero = set) on a grid of
/// `dims` with voxel `spacing`; `None` when exactly one is empty, `Some(0)`
/// when both are.
pub fn hd95(pred: &[u8], reference: &[u8], dims: [usize; 3], spacing: [f64; 3]) -> Option<f64> {
    assert_eq!(
        pred.len(),
        dims.iter().product::<usize>(),
        "hd95: prediction size"
    );
    assert_eq!(reference.len(), pred.len(), "hd95: reference size");
    let bp = clisc_imaging::overlap::bbox_3d(pred, dims);
    let br = clisc_imaging::overlap::bbox_3d(reference, dims);
    let ((lp, hp), (lr, hr)) = match (bp, br) {
        (None, None) => return Some(0.0),
        (Some(a), Some(b)) => (a, b),
        _ => return None,
    };
    // Union box, exact for the transform (all surface voxels lie in it).
    let lo = [0, 1, 2].map(|d| lp[d].min(lr[d]));
    let hi = [0, 1, 2].map(|d| hp[d].max(hr[d]));
    let bd = [0, 1, 2].map(|d| hi[d] - lo[d] + 1);
    let [nx, ny, _] = dims;
    let extract = |m: &[u8]| -> Vec<bool> {
        let mut out = Vec::with_capacity(bd.iter().product());
        for z in lo[2]..=hi[2] {
            for y in lo[1]..=hi[1] {
                let s = lo[0] + nx * (y + ny * z);
                out.extend(m[s..s + bd[0]].iter().map(|&v| v != 0));
            }
        }
        out
    };
    // Voxels of the box on the array border stay border voxels: the box
    // cut never removes a set neighbour, since none exists outside it.
    let sp = surface(&extract(pred), bd);
    let sr = surface(&extract(reference), bd);
    let directed = |from: &[bool], to: &[bool]| -> Vec<f64> {
        let dt = clisc_imaging::distance::squared_edt(to, bd, spacing);
        from.iter()
            .zip(&dt)
            .filter(|(&f, _)| f)
            .map(|(_, &d)| d.sqrt())
            .collect()
    };
    let (mut a, b) = std::thread::scope(|s| {
        let h = s.spawn(|| directed(&sr, &sp));
        let a = directed(&sp, &sr);
        (a, h.join().expect("hd95 worker"))
    });
    a.extend(b);
    Some(percentile_linear(&mut a, 95.0))
}

/// All scores of one binary pair on `grid` (spacing from the grid).
pub(crate) fn binary_metrics(pred: &[u8], reference: &[u8], grid: &Grid) -> RegionMetrics {
    let counts = clisc_imaging::overlap::OverlapCounts::of(pred, reference);
    let tp = counts.both as usize;
    let fp = (counts.a - counts.both) as usize;
    let fnn = (counts.b - counts.both) as usize;
    let tn = pred.len() - tp - fp - fnn;
    let ratio = |a: usize, b: usize| {
        if a + b == 0 {
            f64::NAN
        } else {
            a as f64 / (a + b) as f64
        }
    };
    RegionMetrics {
        dice: if tp + fp + fnn == 0 {
            1.0
        } else {
            2.0 * tp as f64 / (2 * tp + fp + fnn) as f64
        },
        hd95: hd95(pred, reference, grid.dims(), grid.spacing),
        sensitivity: ratio(tp, fnn),
        specificity: ratio(tn, fp),
        pred_voxels: tp + fp,
        ref_voxels: tp + fnn,
    }
}

/// True when a label volume carries BraTS sub-regions (any label other
/// than 0 and 1), so that TC and ET can be scored.
pub(crate) fn has_subregions(labels: &[u8]) -> bool {
    labels.iter().any(|&v| v > 1)
}

/// The scores of one case, per region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseMetrics {
    /// Case id.
    pub id: String,
    /// Scores per scored region (WT always; TC and ET when both volumes
    /// carry BraTS sub-region labels).
    pub regions: BTreeMap<Region, RegionMetrics>,
}

/// Scores a prediction against the reference. Both must have the same
/// shape; spacing comes from the reference grid. WT is always scored, TC
/// and ET only when both volumes have BraTS sub-region labels (a binary
/// prediction is whole tumour only).
pub fn evaluate_case(
    id: &str,
    pred: &LabelVolume,
    reference: &LabelVolume,
) -> Result<CaseMetrics, PluginError> {
    if pred.grid.shape != reference.grid.shape {
        return Err(PluginError::input(format!(
            "case {id}: prediction grid {:?} differs from ground truth {:?}",
            pred.grid.shape, reference.grid.shape
        )));
    }
    if !clisc_nifti::same_geometry(&pred.grid, &reference.grid, 1e-3) {
        tracing::warn!(
            "case {id}: prediction and ground truth affines differ; scoring voxel-wise anyway"
        );
    }
    let mut regions = vec![Region::WholeTumour];
    if has_subregions(&pred.data) && has_subregions(&reference.data) {
        regions.extend([Region::TumourCore, Region::Enhancing]);
    }
    let mut out = BTreeMap::new();
    for r in regions {
        let p: Vec<u8> = pred.data.iter().map(|&v| u8::from(r.contains(v))).collect();
        let g: Vec<u8> = reference
            .data
            .iter()
            .map(|&v| u8::from(r.contains(v)))
            .collect();
        out.insert(r, binary_metrics(&p, &g, &reference.grid));
    }
    Ok(CaseMetrics {
        id: id.to_string(),
        regions: out,
    })
}

/// Mean and population standard deviation (ddof = 0, like `np.std`) of
/// the defined values, with the count of defined and undefined ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean over defined values (NaN when none).
    pub mean: f64,
    /// Population standard deviation over defined values.
    pub std: f64,
    /// Number of defined values.
    pub n: usize,
    /// Number of undefined values (`None` / NaN), left out of mean and std.
    pub undefined: usize,
}

impl Stat {
    /// Statistics of `values`, skipping `None` and NaN.
    pub fn of(values: impl IntoIterator<Item = Option<f64>>) -> Stat {
        let (mut defined, mut undefined) = (Vec::new(), 0usize);
        for v in values {
            match v {
                Some(x) if x.is_finite() => defined.push(x),
                _ => undefined += 1,
            }
        }
        let n = defined.len();
        if n == 0 {
            return Stat {
                mean: f64::NAN,
                std: f64::NAN,
                n,
                undefined,
            };
        }
        let mean = defined.iter().sum::<f64>() / n as f64;
        let var = defined.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        Stat {
            mean,
            std: var.sqrt(),
            n,
            undefined,
        }
    }
}

/// Summary of one region over cases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegionSummary {
    /// Dice over all cases.
    pub dice: Stat,
    /// HD95 over the cases where it is defined.
    pub hd95: Stat,
    /// Sensitivity over the cases where it is defined.
    pub sensitivity: Stat,
    /// Specificity over the cases where it is defined.
    pub specificity: Stat,
}

/// Per-region summaries over `cases` (a region is summarised over the
/// cases that scored it).
pub(crate) fn summarize(cases: &[CaseMetrics]) -> BTreeMap<Region, RegionSummary> {
    let mut out = BTreeMap::new();
    for r in [Region::WholeTumour, Region::TumourCore, Region::Enhancing] {
        let ms: Vec<&RegionMetrics> = cases.iter().filter_map(|c| c.regions.get(&r)).collect();
        if ms.is_empty() {
            continue;
        }
        out.insert(
            r,
            RegionSummary {
                dice: Stat::of(ms.iter().map(|m| Some(m.dice))),
                hd95: Stat::of(ms.iter().map(|m| m.hd95)),
                sensitivity: Stat::of(ms.iter().map(|m| Some(m.sensitivity))),
                specificity: Stat::of(ms.iter().map(|m| Some(m.specificity))),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_hd95(p: &[u8], r: &[u8], dims: [usize; 3], sp: [f64; 3]) -> f64 {
        let g = Grid::new(dims.map(|d| d as u32), sp);
        let to_b = |m: &[u8]| m.iter().map(|&v| v != 0).collect::<Vec<_>>();
        let (sp_, sr) = (surface(&to_b(p), dims), surface(&to_b(r), dims));
        let coords = |s: &[bool]| -> Vec<[f64; 3]> {
            s.iter()
                .enumerate()
                .filter(|(_, &b)| b)
                .map(|(i, _)| {
                    let (x, y, z) = (
                        i % dims[0],
                        (i / dims[0]) % dims[1],
                        i / (dims[0] * dims[1]),
                    );
                    [
                        x as f64 * g.spacing[0],
                        y as f64 * g.spacing[1],
                        z as f64 * g.spacing[2],
                    ]
                })
                .collect()
        };
        let (a, b) = (coords(&sp_), coords(&sr));
        let dmin = |p: &[f64; 3], set: &[[f64; 3]]| {
            set.iter()
                .map(|q| {
                    ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let mut all: Vec<f64> = a
            .iter()
            .map(|p| dmin(p, &b))
            .chain(b.iter().map(|p| dmin(p, &a)))
            .collect();
        percentile_linear(&mut all, 95.0)
    }

    #[test]
    fn hd95_matches_brute_force_on_random_masks() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..20 {
            let dims = [
                rng.random_range(3..12),
                rng.random_range(3..12),
                rng.random_range(2..8),
            ];
            let n = dims.iter().product();
            let sp = [
                rng.random_range(0.5..2.0),
                rng.random_range(0.5..2.0),
                rng.random_range(0.5..3.0),
            ];
            let p: Vec<u8> = (0..n).map(|_| u8::from(rng.random_bool(0.3))).collect();
            let r: Vec<u8> = (0..n).map(|_| u8::from(rng.random_bool(0.2))).collect();
            let got = hd95(&p, &r, dims, sp).unwrap();
            let want = brute_hd95(&p, &r, dims, sp);
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
    }

    #[test]
    fn edge_cases() {
        let g = Grid::new([4, 4, 4], [1.0, 1.0, 2.0]);
        let empty = vec![0u8; 64];
        let mut one = empty.clone();
        one[g.index(1, 1, 1)] = 1;
        let both = binary_metrics(&empty, &empty, &g);
        assert_eq!((both.dice, both.hd95), (1.0, Some(0.0)));
        assert!(both.sensitivity.is_nan());
        let miss = binary_metrics(&empty, &one, &g);
        assert_eq!((miss.dice, miss.hd95, miss.sensitivity), (0.0, None, 0.0));
        let fp = binary_metrics(&one, &empty, &g);
        assert_eq!((fp.dice, fp.hd95), (0.0, None));
        let same = binary_metrics(&one, &one, &g);
        assert_eq!(
            (same.dice, same.hd95, same.sensitivity, same.specificity),
            (1.0, Some(0.0), 1.0, 1.0)
        );
        let mut two = empty.clone();
        two[g.index(1, 1, 3)] = 1;
        assert_eq!(binary_metrics(&one, &two, &g).hd95, Some(4.0));
        let s = Stat::of([Some(1.0), None, Some(3.0), Some(f64::NAN)]);
        assert_eq!((s.mean, s.std, s.n, s.undefined), (2.0, 1.0, 2, 2));
    }

    #[test]
    fn regions_follow_brats_labels() {
        let g = Grid::new([3, 1, 1], [1.0; 3]);
        let gt = LabelVolume {
            grid: g,
            data: vec![1, 2, 4].into(),
        };
        let pred = LabelVolume {
            grid: g,
            data: vec![4, 2, 4].into(),
        };
        let m = evaluate_case("c", &pred, &gt).unwrap();
        assert_eq!(m.regions[&Region::WholeTumour].dice, 1.0);
        assert!((m.regions[&Region::TumourCore].dice - 1.0).abs() < 1e-12);
        assert!((m.regions[&Region::Enhancing].dice - 2.0 / 3.0).abs() < 1e-12);
        let binary = LabelVolume {
            grid: g,
            data: vec![1, 1, 0].into(),
        };
        let m = evaluate_case("c", &binary, &gt).unwrap();
        assert_eq!(m.regions.len(), 1);
        let other = LabelVolume::zeros(Grid::new([1, 3, 1], [1.0; 3]));
        assert!(evaluate_case("c", &other, &gt).is_err());
    }
}

/// Scores of many cases with their summary; what `clisc eval` prints and
/// writes, also usable in memory by the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Per-case scores, in the order given.
    pub cases: Vec<CaseMetrics>,
    /// Mean ± std per region.
    pub summary: BTreeMap<Region, RegionSummary>,
}

fn fmt_num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".into()
    }
}

impl Evaluation {
    /// Scores `(id, prediction, reference)` triples (see [`evaluate_case`]).
    pub fn of<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a LabelVolume, &'a LabelVolume)>,
    ) -> Result<Evaluation, PluginError> {
        let cases = pairs
            .into_iter()
            .map(|(id, p, r)| evaluate_case(id, p, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Evaluation::from_cases(cases))
    }

    /// Wraps already computed case scores with their summary.
    pub fn from_cases(cases: Vec<CaseMetrics>) -> Evaluation {
        let summary = summarize(&cases);
        Evaluation { cases, summary }
    }

    /// A fixed-width table: one line per case (Dice in %, HD95 in mm,
    /// sensitivity and specificity in %), then mean ± std per region.
    pub fn table(&self) -> String {
        let regions: Vec<Region> = self.summary.keys().copied().collect();
        let width = self
            .cases
            .iter()
            .map(|c| c.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut s = format!("{:width$}", "case");
        for r in &regions {
            s.push_str(&format!(
                "  {:>8} {:>9} {:>7} {:>7}",
                format!("{} Dice", r.name()),
                format!("{} HD95", r.name()),
                "sens",
                "spec"
            ));
        }
        s.push('\n');
        for c in &self.cases {
            s.push_str(&format!("{:width$}", c.id));
            for r in &regions {
                match c.regions.get(r) {
                    Some(m) => s.push_str(&format!(
                        "  {:>8} {:>9} {:>7} {:>7}",
                        fmt_num(100.0 * m.dice, 2),
                        m.hd95.map_or("n/a".into(), |h| fmt_num(h, 2)),
                        fmt_num(100.0 * m.sensitivity, 1),
                        fmt_num(100.0 * m.specificity, 2)
                    )),
                    None => s.push_str(&format!("  {:>8} {:>9} {:>7} {:>7}", "-", "-", "-", "-")),
                }
            }
            s.push('\n');
        }
        for (r, sum) in &self.summary {
            s.push_str(&format!(
                "{}: Dice {} ± {} % (n = {}), HD95 {} ± {} mm (n = {}{}), sensitivity {} %, specificity {} %\n",
                r.name(),
                fmt_num(100.0 * sum.dice.mean, 2),
                fmt_num(100.0 * sum.dice.std, 2),
                sum.dice.n,
                fmt_num(sum.hd95.mean, 2),
                fmt_num(sum.hd95.std, 2),
                sum.hd95.n,
                if sum.hd95.undefined > 0 {
                    format!(", {} undefined: exactly one mask empty", sum.hd95.undefined)
                } else {
                    String::new()
                },
                fmt_num(100.0 * sum.sensitivity.mean, 2),
                fmt_num(100.0 * sum.specificity.mean, 3),
            ));
        }
        s
    }

    /// CSV, one row per case and region:
    /// `case_id,region,dice,hd95,sensitivity,specificity,pred_voxels,ref_voxels`;
    /// undefined values are empty fields.
    pub fn to_csv(&self) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v}")
            } else {
                String::new()
            }
        };
        let mut s = String::from(
            "case_id,region,dice,hd95,sensitivity,specificity,pred_voxels,ref_voxels\n",
        );
        for c in &self.cases {
            for (r, m) in &c.regions {
                s.push_str(&format!(
                    "{},{},{},{},{},{},{},{}\n",
                    c.id,
                    r.name(),
                    num(m.dice),
                    m.hd95.map(num).unwrap_or_default(),
                    num(m.sensitivity),
                    num(m.specificity),
                    m.pred_voxels,
                    m.ref_voxels
                ));
            }
        }
        s
    }

    /// JSON with `cases` and `summary` (undefined values are `null`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("evaluation serialises")
    }
}
