//! An external clisc plugin of the promptable-segmenter kind, built as a
//! `cdylib` and loaded by `clisc` at run time (`[plugins] paths = [...]`
//! in a pipeline, or `CLISC_PLUGIN_PATH`).
//!
//! `example-box-fill` segments the bright object a box points at, without
//! any learned weights: inside the box, pixels brighter than
//! `mean + k * std` of the box are foreground; the connected component
//! holding the most positive points (or the largest one when there are
//! none) is kept and its holes are filled. Without a box, the box is the
//! bounding box of the positive points grown by `point_margin` pixels.
//! Together with `example-threshold` it shows both directions of the SDK:
//! a per-slice 2D stage and a per-case 3D one.
#![warn(unreachable_pub)]

use abi_stable::std_types::{ROption, RResult, RSlice, RVec};
use clisc_sdk::config::Settings;
use clisc_sdk::stage::{PromptableSegmenter, SliceImage};
use clisc_sdk::{
    export_plugins, plugin_settings, ConfigField, HostContext, Mask2d, Plugin, PluginError,
    PromptSet, StageKind, StageObject,
};
use std::collections::VecDeque;

/// The plugin type: identity and constructor.
pub struct BoxFillPlugin;

impl Plugin for BoxFillPlugin {
    const NAME: &'static str = "example-box-fill";
    const KIND: StageKind = StageKind::PromptableSegmenter;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Example external plugin: bright connected region inside the prompt box, holes filled";

    fn settings() -> Vec<ConfigField> {
        BoxFillSettings::schema()
    }

    fn create(settings: Settings, _ctx: &HostContext) -> Result<StageObject, PluginError> {
        let s = BoxFillSettings::read(&settings)?;
        Ok(StageObject::promptable_segmenter(BoxFill {
            k: s.k,
            point_margin: s.point_margin.max(0) as f32,
        }))
    }
}

plugin_settings! {
    /// The settings, each declared once (schema, field, reader).
    struct BoxFillSettings {
        /// foreground threshold in standard deviations above the box's mean
        k: f32 = float(0.5),
        /// half-size in pixels of the box built around points when no box is given
        point_margin: i64 = integer(5),
    }
}

/// The stage itself.
pub struct BoxFill {
    k: f32,
    point_margin: f32,
}

impl BoxFill {
    /// The mask of one prompt set on `image` (one channel).
    pub fn segment_one(&self, image: &clisc_sdk::Image2d, prompts: &PromptSet) -> Mask2d {
        let (w, h) = (image.width as usize, image.height as usize);
        let mut mask = Mask2d::zeros(image.width, image.height);
        let positives: Vec<(f32, f32)> = prompts
            .points
            .iter()
            .filter(|p| p.positive)
            .map(|p| (p.x, p.y))
            .collect();
        let (x0, y0, x1, y1) = match (&prompts.bbox, positives.is_empty()) {
            (ROption::RSome(b), _) => (b.x0, b.y0, b.x1, b.y1),
            (ROption::RNone, false) => {
                let m = self.point_margin;
                let xs = positives.iter().map(|p| p.0);
                let ys = positives.iter().map(|p| p.1);
                (
                    xs.clone().fold(f32::INFINITY, f32::min) - m,
                    ys.clone().fold(f32::INFINITY, f32::min) - m,
                    xs.fold(f32::NEG_INFINITY, f32::max) + m,
                    ys.fold(f32::NEG_INFINITY, f32::max) + m,
                )
            }
            (ROption::RNone, true) => return mask,
        };
        let clamp = |v: f32, n: usize| (v.round().max(0.0) as usize).min(n.saturating_sub(1));
        let (x0, x1, y0, y1) = (clamp(x0, w), clamp(x1, w), clamp(y0, h), clamp(y1, h));
        if x1 < x0 || y1 < y0 {
            return mask;
        }
        let (bw, bh) = (x1 - x0 + 1, y1 - y0 + 1);
        let values: Vec<f32> = (y0..=y1)
            .flat_map(|y| (x0..=x1).map(move |x| (x, y)))
            .map(|(x, y)| image.at(x, y, 0))
            .collect();
        let n = values.len() as f32;
        let mean = values.iter().sum::<f32>() / n;
        let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
        let threshold = mean + self.k * std;
        let fg: Vec<bool> = values.iter().map(|&v| v > threshold).collect();
        // Connected components (4-neighbourhood) inside the box.
        let mut component = vec![0u32; fg.len()];
        let mut sizes = vec![0usize];
        for start in 0..fg.len() {
            if !fg[start] || component[start] != 0 {
                continue;
            }
            let id = sizes.len() as u32;
            sizes.push(0);
            let mut queue = VecDeque::from([start]);
            component[start] = id;
            while let Some(i) = queue.pop_front() {
                sizes[id as usize] += 1;
                let (x, y) = (i % bw, i / bw);
                let mut visit = |j: usize| {
                    if fg[j] && component[j] == 0 {
                        component[j] = id;
                        queue.push_back(j);
                    }
                };
                if x > 0 {
                    visit(i - 1);
                }
                if x + 1 < bw {
                    visit(i + 1);
                }
                if y > 0 {
                    visit(i - bw);
                }
                if y + 1 < bh {
                    visit(i + bw);
                }
            }
        }
        if sizes.len() == 1 {
            return mask;
        }
        // The component with the most positive points, ties (and no points) by size.
        let mut votes = vec![0usize; sizes.len()];
        for &(px, py) in &positives {
            let (px, py) = (
                px.round() as isize - x0 as isize,
                py.round() as isize - y0 as isize,
            );
            if px >= 0 && py >= 0 && (px as usize) < bw && (py as usize) < bh {
                votes[component[py as usize * bw + px as usize] as usize] += 1;
            }
        }
        let keep = (1..sizes.len())
            .max_by_key(|&c| (votes[c], sizes[c]))
            .expect("at least one component") as u32;
        // Fill holes: background not reachable from the box border becomes foreground.
        let mut outside = vec![false; fg.len()];
        let mut queue: VecDeque<usize> = (0..fg.len())
            .filter(|&i| {
                let (x, y) = (i % bw, i / bw);
                (x == 0 || y == 0 || x + 1 == bw || y + 1 == bh) && component[i] != keep
            })
            .collect();
        for &i in &queue {
            outside[i] = true;
        }
        while let Some(i) = queue.pop_front() {
            let (x, y) = (i % bw, i / bw);
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < bw).then(|| i + 1),
                (y > 0).then(|| i - bw),
                (y + 1 < bh).then(|| i + bw),
            ];
            for j in neighbours.into_iter().flatten() {
                if !outside[j] && component[j] != keep {
                    outside[j] = true;
                    queue.push_back(j);
                }
            }
        }
        for (i, &out) in outside.iter().enumerate() {
            if !out {
                let (x, y) = (x0 + i % bw, y0 + i / bw);
                mask.data[y * w + x] = 1;
            }
        }
        mask
    }
}

impl PromptableSegmenter for BoxFill {
    fn segment(
        &mut self,
        slice: &SliceImage,
        prompts: RSlice<'_, PromptSet>,
    ) -> RResult<RVec<Mask2d>, PluginError> {
        if slice.image.channels != 1 {
            return RResult::RErr(PluginError::input(format!(
                "example-box-fill: expected a one-channel slice, got {} channels",
                slice.image.channels
            )));
        }
        RResult::ROk(
            prompts
                .iter()
                .map(|p| self.segment_one(&slice.image, p))
                .collect(),
        )
    }
}

export_plugins!(BoxFillPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use clisc_sdk::{BoxXyxy, Image2d, PromptPoint};

    /// A 12x10 image with a bright ring (a hollow square) at x 3..=7, y 2..=6
    /// and a second bright blob at x 9..=10, y 7..=8.
    fn image() -> Image2d {
        let (w, h) = (12, 10);
        let mut data = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let ring = (3..=7).contains(&x)
                    && (2..=6).contains(&y)
                    && !((4..=6).contains(&x) && (3..=5).contains(&y));
                let blob = (9..=10).contains(&x) && (7..=8).contains(&y);
                if ring || blob {
                    data[y * w + x] = 3.0;
                }
            }
        }
        Image2d {
            width: w as u32,
            height: h as u32,
            channels: 1,
            data: data.into(),
        }
    }

    fn count(m: &Mask2d) -> usize {
        m.data.iter().filter(|&&v| v != 0).count()
    }

    #[test]
    fn keeps_the_pointed_component_and_fills_its_holes() {
        let stage = BoxFill {
            k: 0.5,
            point_margin: 5.0,
        };
        let img = image();
        let whole = PromptSet {
            slice: 0,
            bbox: ROption::RSome(BoxXyxy {
                x0: 0.0,
                y0: 0.0,
                x1: 11.0,
                y1: 9.0,
            }),
            points: vec![PromptPoint {
                x: 3.0,
                y: 2.0,
                positive: true,
            }]
            .into(),
        };
        let m = stage.segment_one(&img, &whole);
        assert_eq!(count(&m), 25, "the filled 5x5 square");
        assert_eq!(m.data[4 * 12 + 5], 1, "the hole is filled");
        // Without points the largest component wins; a point on the blob selects the blob.
        let blob = PromptSet {
            points: vec![PromptPoint {
                x: 10.0,
                y: 8.0,
                positive: true,
            }]
            .into(),
            ..whole.clone()
        };
        assert_eq!(count(&stage.segment_one(&img, &blob)), 4);
        // Points only: the box is built around them.
        let points_only = PromptSet {
            bbox: ROption::RNone,
            ..blob
        };
        assert_eq!(count(&stage.segment_one(&img, &points_only)), 4);
        // No prompt at all: empty mask.
        let none = PromptSet {
            slice: 0,
            bbox: ROption::RNone,
            points: RVec::new(),
        };
        assert_eq!(count(&stage.segment_one(&img, &none)), 0);
    }
}
