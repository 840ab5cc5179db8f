//! `box-points`: box and point prompts from an ROI, slice by slice.
//!
//! For every axial slice where the ROI is non-empty (or, with
//! `per_component`, for every 8-connected ROI component on it):
//!
//! * **box**: the ROI's bounding box dilated by `box_dilation` pixels and
//!   clipped to the image (corners inclusive, `x` = column, `y` = row);
//! * **positive points**: candidates are the ROI pixels whose FLAIR value,
//!   normalised to `[0, 1]` within the ROI's own intensity range on that
//!   slice, is above `intensity_fraction` (0.6); they are listed in
//!   row-major order (row by row, column by column). `reference` selection
//!   takes the first, `n/3`, `n/2`, `2n/3` and last candidate (integer
//!   division, as in the CLISC code; for another count, evenly spaced
//!   indices); `spread` takes a farthest-point sample (starting from the
//!   candidate nearest the candidates' centroid), so the points cover the
//!   region instead of clustering along a row. When no pixel passes the
//!   intensity test (a flat ROI), every ROI pixel is a candidate; duplicate
//!   picks (fewer candidates than points) are dropped;
//! * **negative points**: the box corners (top-left, top-right,
//!   bottom-left, bottom-right), the first `negative_points` of them.

use abi_stable::std_types::{ROption, RResult, RVec};
use clisc_imaging::components::label_2d;
use clisc_imaging::overlap::bbox_2d;
use clisc_imaging::Connectivity;
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{CaseInput, PromptGenerator};
use clisc_sdk::{
    plugin_settings, BoxXyxy, CasePrompts, ConfigField, HostContext, LabelVolume, Plugin,
    PluginError, PromptPoint, PromptSet, StageKind, StageObject,
};

/// Plugin registration of [`BoxPoints`].
pub(crate) struct BoxPointsPlugin;

impl Plugin for BoxPointsPlugin {
    const NAME: &'static str = "box-points";
    const KIND: StageKind = StageKind::PromptGenerator;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "ROI bounding box (dilated) + bright ROI pixels as positive points + box corners as negatives (CLISC)";

    fn settings() -> Vec<ConfigField> {
        BoxPoints::schema()
    }

    fn create(settings: Settings, _ctx: &HostContext) -> Result<StageObject, PluginError> {
        Ok(StageObject::prompt_generator(BoxPoints::from_settings(
            &settings,
        )?))
    }
}

clisc_sdk::setting_choice! {
    /// How positive points are chosen among the candidates.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Selection {
        /// CLISC's indices in row-major order.
        Reference = "reference",
        /// Farthest-point sampling.
        Spread = "spread",
    }
}

plugin_settings! {
    /// The generator with its settings.
    #[derive(Debug, Clone, PartialEq)]
    pub struct BoxPoints {
        /// pixels added around the ROI's bounding box (clipped to the image)
        pub box_dilation: usize = integer(10),
        /// positive points per prompt set
        pub positive_points: usize = integer(5),
        /// negative points per prompt set (box corners, 0..=4)
        pub negative_points: usize = integer(4),
        /// positives come from ROI pixels above this fraction of the ROI's intensity range
        pub intensity_fraction: f32 = float(0.6),
        /// `reference`: first, n/3, n/2, 2n/3, last in row-major order; `spread`: farthest-point sampling
        pub point_selection: Selection = choice(Selection::Reference.name(), Selection::NAMES),
        /// one prompt set per connected ROI component on a slice instead of one per slice
        pub per_component: bool = bool(false),
        /// include the box prompt
        pub use_box: bool = bool(true),
    }
}

impl Default for BoxPoints {
    fn default() -> Self {
        Self::defaults().expect("box-points declares a default for every setting")
    }
}

impl BoxPoints {
    /// Reads and checks the settings.
    pub fn from_settings(s: &Settings) -> Result<Self, PluginError> {
        let out = Self::read(s)?;
        if out.negative_points > 4 {
            return Err(PluginError::config(format!(
                "box-points: `negative_points` must be 0..=4 (the box corners), found {}",
                out.negative_points
            )));
        }
        if !(0.0..1.0).contains(&out.intensity_fraction) {
            return Err(PluginError::config(format!(
                "box-points: `intensity_fraction` must lie in [0, 1), found {}",
                out.intensity_fraction
            )));
        }
        Ok(out)
    }

    /// The prompt set of one region (`region` = 0/1 mask of a slice).
    pub fn prompt_set(
        &self,
        z: u32,
        image: &[f32],
        region: &[u8],
        width: usize,
        height: usize,
    ) -> Option<PromptSet> {
        let [x0, y0, x1, y1] = bbox_2d(region, width)?;
        let d = self.box_dilation;
        let bx = BoxXyxy {
            x0: x0.saturating_sub(d) as f32,
            y0: y0.saturating_sub(d) as f32,
            x1: (x1 + d).min(width - 1) as f32,
            y1: (y1 + d).min(height - 1) as f32,
        };
        let pixels: Vec<usize> = (0..width * height).filter(|&i| region[i] != 0).collect();
        let (lo, hi) = pixels
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &i| {
                (lo.min(image[i]), hi.max(image[i]))
            });
        let mut candidates: Vec<usize> = if hi > lo {
            pixels
                .iter()
                .copied()
                .filter(|&i| (image[i] - lo) / (hi - lo) > self.intensity_fraction)
                .collect()
        } else {
            Vec::new()
        };
        if candidates.is_empty() {
            candidates = pixels;
        }
        let picks = match self.point_selection {
            Selection::Reference => reference_indices(candidates.len(), self.positive_points),
            Selection::Spread => farthest_points(&candidates, width, self.positive_points),
        };
        let mut points: Vec<PromptPoint> = picks
            .into_iter()
            .map(|k| {
                let i = candidates[k];
                PromptPoint {
                    x: (i % width) as f32,
                    y: (i / width) as f32,
                    positive: true,
                }
            })
            .collect();
        let corners = [
            (bx.x0, bx.y0),
            (bx.x1, bx.y0),
            (bx.x0, bx.y1),
            (bx.x1, bx.y1),
        ];
        points.extend(
            corners
                .iter()
                .take(self.negative_points)
                .map(|&(x, y)| PromptPoint {
                    x,
                    y,
                    positive: false,
                }),
        );
        Some(PromptSet {
            slice: z,
            bbox: if self.use_box {
                ROption::RSome(bx)
            } else {
                ROption::RNone
            },
            points: points.into(),
        })
    }

    /// Prompts for every slice of the case where `roi` is non-empty.
    pub fn case_prompts(
        &self,
        case: &CaseInput,
        roi: &LabelVolume,
    ) -> Result<CasePrompts, PluginError> {
        let flair = case.image.require_channel("flair")?;
        if roi.grid.shape != case.image.grid.shape {
            return Err(PluginError::input(format!(
                "box-points: ROI grid {:?} differs from the image grid {:?} of case {}",
                roi.grid.shape, case.image.grid.shape, case.id
            )));
        }
        let [w, h, nz] = roi.grid.dims();
        let n = w * h;
        let mut sets = RVec::new();
        for z in 0..nz {
            let mask = &roi.data[z * n..(z + 1) * n];
            if !mask.iter().any(|&v| v != 0) {
                continue;
            }
            let image = &flair[z * n..(z + 1) * n];
            if self.per_component {
                let comps = label_2d(mask, w, h, Connectivity::Full);
                for k in 1..=comps.sizes.len() as u32 {
                    let region: Vec<u8> = comps.labels.iter().map(|&l| u8::from(l == k)).collect();
                    sets.extend(self.prompt_set(z as u32, image, &region, w, h));
                }
            } else {
                let region: Vec<u8> = mask.iter().map(|&v| u8::from(v != 0)).collect();
                sets.extend(self.prompt_set(z as u32, image, &region, w, h));
            }
        }
        Ok(CasePrompts { sets })
    }
}

/// CLISC's picks among `n` candidates: for 5 points `[0, n/3, n/2, 2n/3,
/// n-1]` (integer division), otherwise evenly spaced; duplicates dropped.
pub(crate) fn reference_indices(n: usize, k: usize) -> Vec<usize> {
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = if k == 5 {
        vec![0, n / 3, n / 2, 2 * n / 3, n - 1]
    } else if k == 1 {
        vec![n / 2]
    } else {
        (0..k).map(|j| j * (n - 1) / (k - 1)).collect()
    };
    idx.dedup();
    idx
}

/// Farthest-point sampling of `k` of the pixel indices `candidates`
/// (returns positions in `candidates`), starting next to their centroid.
pub(crate) fn farthest_points(candidates: &[usize], width: usize, k: usize) -> Vec<usize> {
    if candidates.is_empty() || k == 0 {
        return Vec::new();
    }
    let xy: Vec<(f64, f64)> = candidates
        .iter()
        .map(|&i| ((i % width) as f64, (i / width) as f64))
        .collect();
    let n = xy.len() as f64;
    let (cx, cy) = xy
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let d2 = |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).powi(2) + (a.1 - b.1).powi(2);
    let first = (0..xy.len())
        .min_by(|&a, &b| d2(xy[a], (cx, cy)).total_cmp(&d2(xy[b], (cx, cy))))
        .expect("non-empty");
    let mut chosen = vec![first];
    let mut dist: Vec<f64> = xy.iter().map(|&p| d2(p, xy[first])).collect();
    while chosen.len() < k.min(xy.len()) {
        let next = (0..xy.len())
            .max_by(|&a, &b| dist[a].total_cmp(&dist[b]).then(b.cmp(&a)))
            .expect("non-empty");
        if dist[next] == 0.0 {
            break;
        }
        chosen.push(next);
        for (j, p) in xy.iter().enumerate() {
            dist[j] = dist[j].min(d2(*p, xy[next]));
        }
    }
    chosen
}

impl PromptGenerator for BoxPoints {
    fn prompts(
        &mut self,
        case: &CaseInput,
        roi: &LabelVolume,
    ) -> RResult<CasePrompts, PluginError> {
        self.case_prompts(case, roi).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clisc_sdk::{Grid, Volume};

    fn case_with_roi() -> (CaseInput, LabelVolume) {
        // 30x20x3; ROI on slice 1: columns 10..=14, rows 5..=8; intensity = column.
        let grid = Grid::new([30, 20, 3], [1.0; 3]);
        let mut flair = vec![0f32; grid.len()];
        let mut roi = LabelVolume::zeros(grid);
        for y in 0..20 {
            for x in 0..30 {
                flair[grid.index(x, y, 1)] = x as f32;
                if (10..=14).contains(&x) && (5..=8).contains(&y) {
                    roi.data[grid.index(x, y, 1)] = 1;
                }
            }
        }
        let case = CaseInput {
            id: "c".into(),
            image: Volume::single(grid, "flair", flair),
            brain_mask: LabelVolume {
                grid,
                data: vec![1u8; grid.len()].into(),
            },
        };
        (case, roi)
    }

    #[test]
    fn reference_prompts_follow_the_clisc_recipe() {
        let (case, roi) = case_with_roi();
        let p = BoxPoints::default().case_prompts(&case, &roi).unwrap();
        assert_eq!(p.sets.len(), 1);
        let set = &p.sets[0];
        assert_eq!(set.slice, 1);
        // bbox 10..14 x 5..8 dilated by 10, clipped to 0..29 x 0..19.
        assert_eq!(
            set.bbox,
            ROption::RSome(BoxXyxy {
                x0: 0.0,
                y0: 0.0,
                x1: 24.0,
                y1: 18.0
            })
        );
        // Candidates: normalised (x-10)/4 > 0.6 -> x in {13, 14}; rows 5..8 -> n = 8,
        // row-major: (13,5),(14,5),(13,6),(14,6),(13,7),(14,7),(13,8),(14,8).
        // picks 0, 8/3=2, 4, 16/3=5, 7.
        let pos: Vec<(f32, f32)> = set
            .points
            .iter()
            .filter(|q| q.positive)
            .map(|q| (q.x, q.y))
            .collect();
        assert_eq!(
            pos,
            vec![
                (13.0, 5.0),
                (13.0, 6.0),
                (13.0, 7.0),
                (14.0, 7.0),
                (14.0, 8.0)
            ]
        );
        let neg: Vec<(f32, f32)> = set
            .points
            .iter()
            .filter(|q| !q.positive)
            .map(|q| (q.x, q.y))
            .collect();
        assert_eq!(
            neg,
            vec![(0.0, 0.0), (24.0, 0.0), (0.0, 18.0), (24.0, 18.0)]
        );
    }

    #[test]
    fn spread_points_are_distinct_and_inside_the_roi() {
        let (case, roi) = case_with_roi();
        let gen = BoxPoints {
            point_selection: Selection::Spread,
            intensity_fraction: 0.0,
            negative_points: 2,
            ..Default::default()
        };
        let p = gen.case_prompts(&case, &roi).unwrap();
        let pos: Vec<(f32, f32)> = p.sets[0]
            .points
            .iter()
            .filter(|q| q.positive)
            .map(|q| (q.x, q.y))
            .collect();
        assert_eq!(pos.len(), 5);
        for (i, a) in pos.iter().enumerate() {
            assert!(
                (10.0..=14.0).contains(&a.0) && (5.0..=8.0).contains(&a.1),
                "{a:?}"
            );
            assert!(pos[i + 1..].iter().all(|b| b != a));
        }
        // Spread reaches both ends of the candidates (columns 11..=14).
        let xs: Vec<f32> = pos.iter().map(|p| p.0).collect();
        assert!(xs.contains(&11.0) && xs.contains(&14.0), "{pos:?}");
        assert_eq!(p.sets[0].points.iter().filter(|q| !q.positive).count(), 2);
    }

    #[test]
    fn one_set_per_component_when_asked() {
        let (case, mut roi) = case_with_roi();
        let g = roi.grid;
        roi.data[g.index(25, 15, 1)] = 1; // a second, separate component
        roi.data[g.index(3, 3, 2)] = 1; // another slice
        let per_slice = BoxPoints::default().case_prompts(&case, &roi).unwrap();
        assert_eq!(
            per_slice.sets.iter().map(|s| s.slice).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let gen = BoxPoints {
            per_component: true,
            box_dilation: 0,
            ..Default::default()
        };
        let per_comp = gen.case_prompts(&case, &roi).unwrap();
        assert_eq!(
            per_comp.sets.iter().map(|s| s.slice).collect::<Vec<_>>(),
            vec![1, 1, 2]
        );
        let single = &per_comp.sets[1];
        assert_eq!(
            single.bbox,
            ROption::RSome(BoxXyxy {
                x0: 25.0,
                y0: 15.0,
                x1: 25.0,
                y1: 15.0
            })
        );
        // A one-pixel region: one positive (duplicates dropped), 4 corners.
        assert_eq!(single.points.iter().filter(|q| q.positive).count(), 1);
    }

    #[test]
    fn reference_indices_match_python_integer_division() {
        assert_eq!(reference_indices(10, 5), vec![0, 3, 5, 6, 9]);
        assert_eq!(reference_indices(1, 5), vec![0]);
        assert_eq!(reference_indices(9, 3), vec![0, 4, 8]);
        assert!(reference_indices(0, 5).is_empty());
    }

    #[test]
    fn settings_are_checked() {
        let schema = BoxPointsPlugin::settings();
        let parse = |text: &str| {
            let t: toml::Table = toml::from_str(text).unwrap();
            let r = clisc_sdk::config::resolve(&schema, &t).unwrap();
            BoxPoints::from_settings(
                &Settings::parse("box-points", &toml::to_string(&r).unwrap(), &schema).unwrap(),
            )
        };
        assert_eq!(parse("").unwrap(), BoxPoints::default());
        assert!(parse("negative_points = 5")
            .unwrap_err()
            .message
            .contains("negative_points"));
        assert_eq!(
            parse("point_selection = \"spread\"")
                .unwrap()
                .point_selection,
            Selection::Spread
        );
    }
}
