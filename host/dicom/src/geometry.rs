//! Slice geometry: sorting along the slice normal, spacing from positions,
//! geometry warnings, and the voxel-to-world affine (DICOM LPS -> NIfTI RAS).
//!
//! The affine is the one `dcm2niix` writes (without its optional tilt
//! correction or reorientation), so a DICOM series converted by clisc and
//! by dcm2niix give the same voxels and affine:
//! * column `x` = row cosine x column spacing (PixelSpacing\[1\]);
//! * column `y` = minus the column cosine x row spacing (PixelSpacing\[0\]):
//!   DICOM rows are stored bottom-up;
//! * column `z` = (last position - first position) / (slices - 1) after
//!   sorting by position along the normal: spacing comes from positions,
//!   never from SliceThickness;
//! * origin = position of the first slice's last row, first column;
//! * the first two world rows are negated (LPS -> RAS).

use super::scan::SliceHeader;
use clisc_sdk::Grid;

/// Something unusual about a series' slice positions: the volume is still
/// built, but the user should know.
#[derive(Debug, Clone, PartialEq)]
pub enum GeometryWarning {
    /// Gaps between consecutive slices differ beyond tolerance.
    NonUniformSpacing {
        /// Smallest gap (mm).
        min: f64,
        /// Largest gap (mm).
        max: f64,
        /// Median gap (mm), used for the affine.
        median: f64,
    },
    /// A gap is a whole multiple of the usual spacing: slices are missing.
    MissingSlices {
        /// Index (sorted, 0-based) of the slice before the gap.
        after: usize,
        /// The gap (mm).
        gap: f64,
        /// How many slices would fill it.
        missing: usize,
    },
    /// Slice positions do not advance along the slice normal (CT gantry
    /// tilt): the affine is sheared.
    GantryTilt {
        /// Angle between the slice normal and the direction in which the
        /// slice positions advance (degrees).
        degrees: f64,
    },
    /// A single slice: the through-plane size comes from SliceThickness
    /// (or 1 mm), as there is no second position.
    SingleSlice {
        /// The through-plane voxel size used (mm).
        thickness: f64,
    },
}

impl std::fmt::Display for GeometryWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GeometryWarning::NonUniformSpacing { min, max, median } => write!(
                f,
                "non-uniform slice spacing: gaps from {min:.4} to {max:.4} mm (median {median:.4} mm); \
                 the volume uses the mean spacing and is not exact in world space"
            ),
            GeometryWarning::MissingSlices { after, gap, missing } => write!(
                f,
                "missing slices: a gap of {gap:.4} mm after sorted slice {} ({missing} slice(s) missing?)",
                after + 1
            ),
            GeometryWarning::GantryTilt { degrees } => write!(
                f,
                "gantry tilt of {degrees:.3} degrees: slice positions do not follow the slice normal \
                 (the affine is sheared; not resampled)"
            ),
            GeometryWarning::SingleSlice { thickness } => {
                write!(f, "single slice: through-plane size {thickness} mm taken from SliceThickness")
            }
        }
    }
}

/// The geometry of a stack of slices.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesGeometry {
    /// Shape, spacing and RAS affine of the volume.
    pub grid: Grid,
    /// Slice normal (row cosine x column cosine), LPS.
    pub normal: [f64; 3],
    /// Warnings about the slice positions.
    pub warnings: Vec<GeometryWarning>,
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: &[f64; 3], b: &[f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm(a: &[f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

fn unit(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = norm(&a);
    (n > 0.5 && n.is_finite()).then(|| a.map(|v| v / n))
}

/// Why a set of slices is not a volume.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotAVolume {
    /// The series has no image slice.
    #[error("no slices")]
    NoSlices,
    /// ImageOrientationPatient is not two unit vectors.
    #[error("ImageOrientationPatient {0:?} is not two unit vectors")]
    NotUnitVectors([f64; 6]),
    /// The row and column cosines are not orthogonal.
    #[error("ImageOrientationPatient {0:?}: row and column cosines are not orthogonal")]
    NotOrthogonal([f64; 6]),
    /// The two cosines are parallel: no normal.
    #[error("ImageOrientationPatient {0:?} is degenerate")]
    Degenerate([f64; 6]),
    /// Several slices at one position (4D or repeated acquisitions).
    #[error("{shared} of {slices} slices share a position with another slice (a 4D or repeated acquisition in one series?)")]
    SharedPositions {
        /// Slices at an already occupied position.
        shared: usize,
        /// Slices in the series.
        slices: usize,
    },
}

/// Row cosine, column cosine and normal (all unit, LPS) of an orientation.
pub fn directions(orientation: &[f64; 6]) -> Result<[[f64; 3]; 3], NotAVolume> {
    let r = unit([orientation[0], orientation[1], orientation[2]]);
    let c = unit([orientation[3], orientation[4], orientation[5]]);
    let (Some(r), Some(c)) = (r, c) else {
        return Err(NotAVolume::NotUnitVectors(*orientation));
    };
    if dot(&r, &c).abs() > 1e-2 {
        return Err(NotAVolume::NotOrthogonal(*orientation));
    }
    let n = unit(cross(&r, &c)).ok_or(NotAVolume::Degenerate(*orientation))?;
    Ok([r, c, n])
}

/// Position of a slice along the normal `n` (mm).
pub fn along(slice: &SliceHeader, n: &[f64; 3]) -> f64 {
    dot(&slice.position, n)
}

/// Sorts `slices` by position along their common normal (ascending; ties,
/// which make the stack invalid anyway, by InstanceNumber) and measures the
/// volume. Errors explain why the slices are not a volume (no slices,
/// several at one position, bad orientation).
pub(crate) fn sort_and_measure(slices: &mut [SliceHeader]) -> Result<SeriesGeometry, NotAVolume> {
    let first = slices.first().ok_or(NotAVolume::NoSlices)?;
    let [r, c, n] = directions(&first.orientation)?;
    slices.sort_by(|a, b| {
        along(a, &n)
            .total_cmp(&along(b, &n))
            .then(a.instance_number.cmp(&b.instance_number))
            .then(a.frame.cmp(&b.frame))
    });
    let first = &slices[0];
    let nz = slices.len();
    let (rows, cols) = (first.rows, first.columns);
    let [dr, dc] = first.pixel_spacing;
    let gaps: Vec<f64> = slices
        .windows(2)
        .map(|w| along(&w[1], &n) - along(&w[0], &n))
        .collect();
    let shared = gaps.iter().filter(|&&g| g.abs() < 1e-3).count();
    if shared > 0 {
        return Err(NotAVolume::SharedPositions { shared, slices: nz });
    }
    let mut warnings = Vec::new();
    let zcol = if nz == 1 {
        let t = first.slice_thickness.filter(|t| *t > 0.0).unwrap_or(1.0);
        warnings.push(GeometryWarning::SingleSlice { thickness: t });
        n.map(|v| v * t)
    } else {
        let last = &slices[nz - 1];
        let v: [f64; 3] =
            std::array::from_fn(|i| (last.position[i] - first.position[i]) / (nz - 1) as f64);
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let tol = (0.01 * median).max(1e-2);
        let mut irregular = false;
        for (k, &g) in gaps.iter().enumerate() {
            if (g - median).abs() <= tol {
                continue;
            }
            irregular = true;
            let ratio = g / median;
            if ratio > 1.5 && (ratio - ratio.round()).abs() < 0.1 {
                warnings.push(GeometryWarning::MissingSlices {
                    after: k,
                    gap: g,
                    missing: ratio.round() as usize - 1,
                });
            }
        }
        if irregular
            && !warnings
                .iter()
                .any(|w| matches!(w, GeometryWarning::MissingSlices { .. }))
        {
            warnings.push(GeometryWarning::NonUniformSpacing {
                min: sorted[0],
                max: sorted[sorted.len() - 1],
                median,
            });
        }
        let cos = (dot(&v, &n) / norm(&v)).clamp(-1.0, 1.0);
        let degrees = cos.acos().to_degrees();
        if degrees > 0.05 {
            warnings.push(GeometryWarning::GantryTilt { degrees });
        }
        v
    };
    let ny = rows as f64;
    let mut affine = [[0.0; 4]; 4];
    for i in 0..3 {
        affine[i][0] = r[i] * dc;
        affine[i][1] = -c[i] * dr;
        affine[i][2] = zcol[i];
        affine[i][3] = first.position[i] + (ny - 1.0) * dr * c[i];
    }
    for row in affine.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    affine[3][3] = 1.0;
    let grid = Grid {
        shape: [cols, rows, nz as u32],
        spacing: [dc, dr, norm(&zcol)],
        affine,
    };
    Ok(SeriesGeometry {
        grid,
        normal: n,
        warnings,
    })
}

/// Axis codes of a grid (nibabel's `aff2axcodes`): for each voxel axis, the
/// world direction (R/L, A/P, S/I) towards which the index increases, from
/// the dominant component of the affine column (e.g. `LAS` for dcm2niix's
/// axial output).
pub fn orientation_code(grid: &Grid) -> String {
    (0..3)
        .map(|j| {
            let col = [grid.affine[0][j], grid.affine[1][j], grid.affine[2][j]];
            let i = (0..3)
                .max_by(|&a, &b| col[a].abs().total_cmp(&col[b].abs()))
                .unwrap_or(0);
            let letters = [('R', 'L'), ('A', 'P'), ('S', 'I')][i];
            if col[i] >= 0.0 {
                letters.0
            } else {
                letters.1
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::PatientStudy;

    fn slice(pos: [f64; 3], orientation: [f64; 6], instance: i64) -> SliceHeader {
        SliceHeader {
            path: format!("s{instance}").into(),
            frame: 0,
            number_of_frames: 1,
            sop_class_uid: String::new(),
            sop_instance_uid: format!("1.2.{instance}"),
            transfer_syntax: String::new(),
            study: PatientStudy::default(),
            series_uid: "1.2".into(),
            series_number: Some(1),
            series_description: String::new(),
            modality: "MR".into(),
            frame_of_reference_uid: String::new(),
            instance_number: Some(instance),
            image_type: vec![],
            rows: 4,
            columns: 5,
            pixel_spacing: [0.5, 0.25],
            orientation,
            position: pos,
            rescale_slope: 1.0,
            rescale_intercept: 0.0,
            echo_number: None,
            echo_time: None,
            stack_id: None,
            temporal_position: None,
            slice_thickness: Some(9.0),
            samples_per_pixel: 1,
            bits_allocated: 16,
        }
    }

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];

    #[test]
    fn sorts_by_position_not_instance_number_and_builds_ras_affine() {
        // Instance numbers deliberately contradict the positions.
        let mut s: Vec<_> = [4.0, 0.0, 2.0]
            .iter()
            .enumerate()
            .map(|(i, &z)| slice([10.0, 20.0, z], AXIAL, i as i64))
            .collect();
        let g = sort_and_measure(&mut s).unwrap();
        assert_eq!(
            s.iter().map(|s| s.position[2]).collect::<Vec<_>>(),
            vec![0.0, 2.0, 4.0]
        );
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
        assert_eq!(g.grid.shape, [5, 4, 3]);
        assert_eq!(g.grid.spacing, [0.25, 0.5, 2.0]);
        // Voxel (0, 0, 0) is the last DICOM row of the lowest slice:
        // LPS (10, 20 + 3 * 0.5, 0) = RAS (-10, -21.5, 0).
        let a = g.grid.affine;
        assert_eq!([a[0][3], a[1][3], a[2][3]], [-10.0, -21.5, 0.0]);
        // x goes along +L (RAS -x), y goes up the rows (DICOM -y = RAS +y).
        assert_eq!([a[0][0], a[1][1], a[2][2]], [-0.25, 0.5, 2.0]);
        assert_eq!(orientation_code(&g.grid), "LAS");
    }

    #[test]
    fn warns_about_missing_slices_non_uniform_spacing_and_tilt() {
        let mut s: Vec<_> = [0.0, 2.0, 4.0, 8.0, 10.0]
            .iter()
            .enumerate()
            .map(|(i, &z)| slice([0.0, 0.0, z], AXIAL, i as i64))
            .collect();
        let g = sort_and_measure(&mut s).unwrap();
        assert!(
            matches!(
                g.warnings[..],
                [GeometryWarning::MissingSlices {
                    after: 2,
                    missing: 1,
                    ..
                }]
            ),
            "{:?}",
            g.warnings
        );

        let mut s: Vec<_> = [0.0, 2.0, 4.5, 6.0]
            .iter()
            .enumerate()
            .map(|(i, &z)| slice([0.0, 0.0, z], AXIAL, i as i64))
            .collect();
        let g = sort_and_measure(&mut s).unwrap();
        assert!(
            matches!(g.warnings[..], [GeometryWarning::NonUniformSpacing { .. }]),
            "{:?}",
            g.warnings
        );

        let mut s: Vec<_> = (0..4)
            .map(|i| slice([0.0, 0.5 * i as f64, 2.0 * i as f64], AXIAL, i))
            .collect();
        let g = sort_and_measure(&mut s).unwrap();
        let GeometryWarning::GantryTilt { degrees } = g.warnings[0] else {
            panic!("{:?}", g.warnings)
        };
        assert!((degrees - 0.25f64.atan().to_degrees()).abs() < 1e-9);
    }

    #[test]
    fn refuses_stacks_with_shared_positions() {
        let mut s: Vec<_> = (0..4)
            .map(|i| slice([0.0, 0.0, (i / 2) as f64], AXIAL, i))
            .collect();
        let err = sort_and_measure(&mut s).unwrap_err();
        assert_eq!(
            err,
            NotAVolume::SharedPositions {
                shared: 2,
                slices: 4
            }
        );
        assert!(err.to_string().contains("share a position"), "{err}");
    }

    #[test]
    fn sagittal_normal_and_single_slice() {
        let sag = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0];
        let [_, _, n] = directions(&sag).unwrap();
        assert_eq!(n, [-1.0, 0.0, 0.0]);
        let mut s = vec![slice([1.0, 2.0, 3.0], sag, 1)];
        let g = sort_and_measure(&mut s).unwrap();
        assert_eq!(g.grid.spacing[2], 9.0);
        assert!(matches!(
            g.warnings[..],
            [GeometryWarning::SingleSlice { .. }]
        ));
    }
}
