//! `classic-prompt` against an independent reference: the same slices and
//! prompts go through the Rust stage (`PromptableSegmenter::segment`) and
//! through `tests/reference/classic_prompt_reference.py`, a NumPy/SciPy
//! implementation written from the method in `src/classic.rs`'s module
//! documentation (its docstring lists the points the documentation leaves
//! open and where the Rust was read to settle them). The masks must be
//! identical: the reference reproduces the stage's f32 rounding (3x3 sum
//! order, threshold arithmetic in f32), so no pixel is excused as a
//! floating-point tie; a failure still reports, per differing pixel,
//! whether it lies within 1e-5 of the threshold.
//!
//! The slices are synthetic, drawn from fixed seeds: a textured brain on a
//! constant outside (the slice minimum, as after z-scoring), irregular
//! bright lesions with edema, dark CSF, bright non-lesion structures. The
//! prompt sets cover a box with corner negatives (as `box-points` makes
//! them), a lesion crossing the box edge, negative points inside a bright
//! non-lesion structure, several positive points (one fractional, one on a
//! dark pixel, one outside the box), a box alone, points without a box,
//! negatives alone, a box past the slice edge, a ring without tissue, a
//! positive point darker than the ring, two prompt sets in one call, and
//! random scenes; each with the default settings and two non-default
//! combinations (every setting changed in at least one).
//!
//! Needs `$CLISC_PYTHON` with NumPy and SciPy (`source scripts/env.sh`);
//! fails, never skips, without it.

use abi_stable::std_types::{ROption, RSlice, RString};
use clisc_sdk::stage::{PromptableSegmenter, SliceImage};
use clisc_sdk::{BoxXyxy, Image2d, PromptPoint, PromptSet};
use clisc_weight_free::classic::ClassicPrompt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// SplitMix64: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn normal(&mut self) -> f32 {
        let u1 = self.uniform(1e-7, 1.0);
        let u2 = self.uniform(0.0, 1.0);
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// Value outside the brain: the slice minimum.
const OUTSIDE: f32 = -1.6;

struct Slice {
    w: usize,
    h: usize,
    data: Vec<f32>,
    brain: Vec<bool>,
}

impl Slice {
    /// A textured elliptic brain (low-frequency waves plus noise) centred
    /// at (`cx`, `cy`) with radii (`rx`, `ry`) on the constant outside.
    fn brain(w: usize, h: usize, (cx, cy, rx, ry): (f32, f32, f32, f32), rng: &mut Rng) -> Self {
        let waves: Vec<(f32, f32, f32, f32)> = (0..3)
            .map(|_| {
                (
                    rng.uniform(0.05, 0.25),
                    rng.uniform(0.05, 0.25),
                    rng.uniform(0.0, std::f32::consts::TAU),
                    rng.uniform(0.1, 0.25),
                )
            })
            .collect();
        let mut data = vec![OUTSIDE; w * h];
        let mut brain = vec![false; w * h];
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
                if dx * dx + dy * dy < 1.0 {
                    let mut v = 0.25 * rng.normal();
                    for &(fx, fy, ph, a) in &waves {
                        v += a * (fx * x as f32 + fy * y as f32 + ph).sin();
                    }
                    data[y * w + x] = v.clamp(-1.4, 1.2);
                    brain[y * w + x] = true;
                }
            }
        }
        Self { w, h, data, brain }
    }

    /// An irregular lesion: radius `r` modulated by angular harmonics, a
    /// bright core (`amp` plus noise), an edema rim out to 1.35 `r` at
    /// about half the brightness and, with `necrosis`, a dark centre.
    /// Returns the lesion's bounding box (inclusive pixel coordinates).
    fn lesion(
        &mut self,
        (cx, cy, r, amp): (f32, f32, f32, f32),
        necrosis: bool,
        rng: &mut Rng,
    ) -> [usize; 4] {
        let harm: Vec<(f32, f32)> = (2..5)
            .map(|_| {
                (
                    rng.uniform(0.0, 0.15),
                    rng.uniform(0.0, std::f32::consts::TAU),
                )
            })
            .collect();
        let mut bb = [usize::MAX, usize::MAX, 0, 0];
        for y in 0..self.h {
            for x in 0..self.w {
                let i = y * self.w + x;
                if !self.brain[i] {
                    continue;
                }
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let theta = dy.atan2(dx);
                let rr: f32 = r
                    * (1.0
                        + harm
                            .iter()
                            .enumerate()
                            .map(|(k, &(a, ph))| a * ((k as f32 + 2.0) * theta + ph).cos())
                            .sum::<f32>());
                let d = (dx * dx + dy * dy).sqrt();
                let v = if necrosis && d < 0.4 * rr {
                    -0.2 + 0.2 * rng.normal()
                } else if d < rr {
                    amp + 0.3 * rng.normal()
                } else if d < 1.35 * rr {
                    0.55 * amp + 0.25 * rng.normal()
                } else {
                    continue;
                };
                self.data[i] = v.max(-1.4);
                bb = [bb[0].min(x), bb[1].min(y), bb[2].max(x), bb[3].max(y)];
            }
        }
        bb
    }

    /// A uniform ellipse of value `v` (plus `noise`), inside the brain.
    fn ellipse(
        &mut self,
        (cx, cy, rx, ry): (f32, f32, f32, f32),
        v: f32,
        noise: f32,
        rng: &mut Rng,
    ) {
        for y in 0..self.h {
            for x in 0..self.w {
                let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
                let i = y * self.w + x;
                if self.brain[i] && dx * dx + dy * dy < 1.0 {
                    self.data[i] = (v + noise * rng.normal()).max(-1.4);
                }
            }
        }
    }

    fn image(&self) -> Image2d {
        Image2d {
            width: self.w as u32,
            height: self.h as u32,
            channels: 1,
            data: self.data.clone().into(),
        }
    }
}

fn pos(x: f32, y: f32) -> PromptPoint {
    PromptPoint {
        x,
        y,
        positive: true,
    }
}

fn neg(x: f32, y: f32) -> PromptPoint {
    PromptPoint {
        x,
        y,
        positive: false,
    }
}

fn bx(x0: f32, y0: f32, x1: f32, y1: f32) -> BoxXyxy {
    BoxXyxy { x0, y0, x1, y1 }
}

fn set(bbox: Option<BoxXyxy>, points: Vec<PromptPoint>) -> PromptSet {
    PromptSet {
        slice: 0,
        bbox: bbox.map_or(ROption::RNone, ROption::RSome),
        points: points.into(),
    }
}

/// As `box-points` prompts: the lesion's box dilated by `d`, a positive
/// point at its centre and negative points at the box's corners.
fn box_points(bb: [usize; 4], d: f32) -> PromptSet {
    let b = bx(
        bb[0] as f32 - d,
        bb[1] as f32 - d,
        bb[2] as f32 + d,
        bb[3] as f32 + d,
    );
    let c = ((b.x0 + b.x1) / 2.0, (b.y0 + b.y1) / 2.0);
    set(
        Some(b),
        vec![
            pos(c.0.round(), c.1.round()),
            neg(b.x0, b.y0),
            neg(b.x1, b.y0),
            neg(b.x0, b.y1),
            neg(b.x1, b.y1),
        ],
    )
}

struct Scene {
    name: String,
    slice: Slice,
    sets: Vec<PromptSet>,
}

fn scenes() -> Vec<Scene> {
    let mut out = Vec::new();
    let mut push = |name: &str, slice: Slice, sets: Vec<PromptSet>| {
        out.push(Scene {
            name: name.to_string(),
            slice,
            sets,
        })
    };

    // A box-points prompt around an irregular lesion next to dark CSF.
    let mut rng = Rng(1);
    let mut s = Slice::brain(96, 96, (48.0, 48.0, 44.0, 40.0), &mut rng);
    s.ellipse((60.0, 40.0, 5.0, 9.0), -1.0, 0.1, &mut rng);
    let bb = s.lesion((42.0, 46.0, 11.0, 2.6), false, &mut rng);
    push("irregular", s, vec![box_points(bb, 3.0)]);

    // A necrotic lesion (dark centre: a hole to fill), positive point on
    // the bright rim.
    let mut rng = Rng(2);
    let mut s = Slice::brain(96, 80, (48.0, 40.0, 44.0, 36.0), &mut rng);
    let bb = s.lesion((50.0, 40.0, 14.0, 2.8), true, &mut rng);
    let mut p = box_points(bb, 2.0);
    p.points[0] = pos(50.0 + 0.7 * 14.0, 40.0);
    push("necrotic", s, vec![p]);

    // The lesion crosses the box: the box covers its left part only.
    let mut rng = Rng(3);
    let mut s = Slice::brain(96, 96, (48.0, 48.0, 44.0, 44.0), &mut rng);
    let bb = s.lesion((50.0, 50.0, 13.0, 2.5), false, &mut rng);
    let b = bx(
        bb[0] as f32 - 2.0,
        bb[1] as f32 + 4.0,
        50.0,
        bb[3] as f32 - 3.0,
    );
    push(
        "lesion_past_box_edge",
        s,
        vec![set(
            Some(b),
            vec![pos(44.0, 50.0), neg(b.x0, b.y0), neg(b.x0, b.y1)],
        )],
    );

    // A bright non-lesion structure touching the lesion and another one
    // apart, both in the box, with negative points inside them.
    let mut rng = Rng(4);
    let mut s = Slice::brain(112, 96, (56.0, 48.0, 52.0, 44.0), &mut rng);
    let bb = s.lesion((46.0, 48.0, 10.0, 2.6), false, &mut rng);
    s.ellipse((61.0, 48.0, 4.0, 9.0), 3.0, 0.1, &mut rng);
    s.ellipse((46.0, 66.0, 7.0, 3.0), 2.9, 0.1, &mut rng);
    let mut p = box_points([bb[0], bb[1], 66, 70], 2.0);
    p.points[0] = pos(46.0, 48.0);
    let mut points = p.points.to_vec();
    points.extend([
        neg(61.0, 44.0),
        neg(61.0, 52.0),
        neg(62.0, 48.0),
        neg(46.0, 66.0),
        neg(43.0, 66.0),
    ]);
    p.points = points.into();
    push("negatives_in_bright_structure", s, vec![p]);

    // Several positive points: one fractional (on a .5 tie), one on the
    // edema or darker, one on tissue next to the lesion, one outside the box.
    let mut rng = Rng(5);
    let mut s = Slice::brain(96, 96, (48.0, 48.0, 44.0, 42.0), &mut rng);
    let bb = s.lesion((48.0, 46.0, 12.0, 3.0), false, &mut rng);
    let mut p = box_points(bb, 3.0);
    let mut points = p.points.to_vec();
    points.extend([
        pos(44.5, 42.5),
        pos(52.3, 49.6),
        pos(48.0, 46.0 + 1.3 * 12.0),
        pos(bb[0] as f32 - 1.0, 46.0),
        pos(5.0, 5.0),
        // Inside the lesion, on a .5 tie in both coordinates.
        neg(42.5, 50.5),
    ]);
    p.points = points.into();
    push("several_positives", s, vec![p]);

    // Flat plateaus (exact values, ties). Top: two plateaus one dark row
    // apart, a positive point on that row (unsmoothed, its neighbourhood's
    // brightest pixels tie across both). Bottom: two equal plateaus three
    // rows apart under a box alone (the brightest pixel ties).
    let mut rng = Rng(12);
    let mut s = Slice::brain(96, 96, (48.0, 48.0, 46.0, 46.0), &mut rng);
    let mut rect = |x0: usize, y0: usize, x1: usize, y1: usize, v: f32| {
        for y in y0..=y1 {
            for x in x0..=x1 {
                s.data[y * s.w + x] = v;
            }
        }
    };
    rect(16, 16, 36, 23, 3.0);
    rect(16, 24, 36, 24, 0.0);
    rect(16, 25, 36, 32, 3.0);
    rect(50, 52, 74, 58, 2.5);
    rect(50, 59, 74, 61, 0.0);
    rect(50, 62, 74, 68, 2.5);
    push(
        "flat_plateaus",
        s,
        vec![
            set(Some(bx(12.0, 12.0, 40.0, 36.0)), vec![pos(26.0, 24.0)]),
            set(Some(bx(46.0, 48.0, 78.0, 72.0)), vec![]),
        ],
    );

    // A lesion on the brain's edge, with scattered dropout pixels at the
    // slice minimum: smoothing carries its brightness onto pixels that are
    // not tissue, which the growth may take but the border step may not.
    let mut rng = Rng(13);
    let mut s = Slice::brain(96, 96, (48.0, 48.0, 40.0, 40.0), &mut rng);
    let bb = s.lesion((84.0, 48.0, 10.0, 3.2), false, &mut rng);
    for y in (bb[1]..=bb[3]).step_by(3) {
        for x in (bb[0] + y % 2..=bb[2]).step_by(4) {
            s.data[y * s.w + x] = OUTSIDE;
        }
    }
    push(
        "lesion_at_brain_edge",
        s,
        vec![box_points([bb[0], bb[1], 90, bb[3]], 3.0)],
    );

    // A box alone, around a lesion with a brighter structure elsewhere in
    // the slice.
    let mut rng = Rng(6);
    let mut s = Slice::brain(96, 96, (48.0, 48.0, 44.0, 44.0), &mut rng);
    s.ellipse((75.0, 70.0, 4.0, 4.0), 4.0, 0.0, &mut rng);
    let bb = s.lesion((35.0, 40.0, 9.0, 2.4), false, &mut rng);
    push(
        "box_only",
        s,
        vec![set(
            Some(bx(
                bb[0] as f32 - 3.0,
                bb[1] as f32 - 3.0,
                bb[2] as f32 + 3.0,
                bb[3] as f32 + 3.0,
            )),
            vec![],
        )],
    );

    // Points without a box: positives only, positives and negatives,
    // negatives only (empty), and nothing at all (empty).
    let mut rng = Rng(7);
    let mut s = Slice::brain(128, 112, (64.0, 56.0, 60.0, 52.0), &mut rng);
    s.ellipse((64.0, 30.0, 6.0, 6.0), 3.0, 0.1, &mut rng);
    s.lesion((58.0, 60.0, 12.0, 2.7), false, &mut rng);
    push(
        "points_without_box",
        s,
        vec![
            set(None, vec![pos(58.0, 60.0)]),
            set(
                None,
                vec![
                    pos(55.0, 58.0),
                    pos(61.0, 63.0),
                    neg(64.0, 30.0),
                    neg(70.0, 70.0),
                ],
            ),
            set(None, vec![neg(58.0, 60.0)]),
            set(None, vec![]),
        ],
    );

    // A lesion in the slice's corner, the box past the slice edge.
    let mut rng = Rng(8);
    let mut s = Slice::brain(80, 72, (30.0, 30.0, 60.0, 60.0), &mut rng);
    let bb = s.lesion((6.0, 7.0, 9.0, 2.8), false, &mut rng);
    push(
        "box_past_slice_edge",
        s,
        vec![set(
            Some(bx(-6.0, -4.5, bb[2] as f32 + 3.0, bb[3] as f32 + 3.0)),
            vec![
                pos(5.0, 6.0),
                neg(-6.0, -4.5),
                neg(bb[2] as f32 + 3.0, bb[3] as f32 + 3.0),
            ],
        )],
    );

    // A small brain inside the box: the ring holds no tissue (the
    // background level falls back to the region's median).
    let mut rng = Rng(9);
    let mut s = Slice::brain(48, 48, (24.0, 24.0, 12.0, 11.0), &mut rng);
    s.lesion((25.0, 23.0, 5.0, 2.5), false, &mut rng);
    push(
        "ring_without_tissue",
        s,
        vec![set(
            Some(bx(8.0, 9.0, 40.0, 39.0)),
            vec![pos(25.0, 23.0), neg(8.0, 9.0), neg(40.0, 39.0)],
        )],
    );

    // A positive point on CSF inside a bright ring: foreground level below
    // the background level.
    let mut rng = Rng(10);
    let mut s = Slice::brain(80, 80, (40.0, 40.0, 36.0, 36.0), &mut rng);
    s.ellipse((40.0, 40.0, 14.0, 14.0), 2.0, 0.2, &mut rng);
    s.ellipse((40.0, 40.0, 6.0, 6.0), -1.0, 0.2, &mut rng);
    push(
        "dark_point_bright_ring",
        s,
        vec![set(Some(bx(30.0, 30.0, 50.0, 50.0)), vec![pos(40.0, 40.0)])],
    );

    // Two lesions, two prompt sets in one call (overlapping boxes).
    let mut rng = Rng(11);
    let mut s = Slice::brain(112, 96, (56.0, 48.0, 52.0, 44.0), &mut rng);
    let a = s.lesion((38.0, 44.0, 10.0, 2.6), false, &mut rng);
    let b = s.lesion((66.0, 52.0, 8.0, 3.2), false, &mut rng);
    push(
        "two_prompt_sets",
        s,
        vec![box_points(a, 4.0), box_points(b, 4.0)],
    );

    // Random scenes: one to three lesions, CSF and bright structures,
    // box-points prompts with random dilation and an extra positive point.
    for k in 0..6u64 {
        let mut rng = Rng(100 + k);
        let (w, h) = (
            rng.uniform(64.0, 128.0) as usize,
            rng.uniform(64.0, 128.0) as usize,
        );
        let (wf, hf) = (w as f32, h as f32);
        let mut s = Slice::brain(w, h, (wf / 2.0, hf / 2.0, 0.45 * wf, 0.45 * hf), &mut rng);
        for _ in 0..rng.uniform(0.0, 3.0) as usize {
            let c = (rng.uniform(0.25, 0.75) * wf, rng.uniform(0.25, 0.75) * hf);
            s.ellipse(
                (c.0, c.1, rng.uniform(2.0, 8.0), rng.uniform(2.0, 8.0)),
                -1.0,
                0.15,
                &mut rng,
            );
        }
        for _ in 0..rng.uniform(0.0, 3.0) as usize {
            let c = (rng.uniform(0.25, 0.75) * wf, rng.uniform(0.25, 0.75) * hf);
            s.ellipse(
                (c.0, c.1, rng.uniform(2.0, 5.0), rng.uniform(2.0, 5.0)),
                rng.uniform(1.5, 3.5),
                0.2,
                &mut rng,
            );
        }
        let mut sets = Vec::new();
        for _ in 0..1 + rng.uniform(0.0, 3.0) as usize {
            let (cx, cy) = (rng.uniform(0.3, 0.7) * wf, rng.uniform(0.3, 0.7) * hf);
            let r = rng.uniform(4.0, 14.0);
            let bb = s.lesion(
                (cx, cy, r, rng.uniform(1.8, 3.5)),
                rng.uniform(0.0, 1.0) < 0.3,
                &mut rng,
            );
            if bb[0] == usize::MAX {
                continue;
            }
            let mut p = box_points(bb, rng.uniform(0.0, 6.0).round());
            let mut points = p.points.to_vec();
            points.push(pos(
                cx + rng.uniform(-0.5, 0.5) * r,
                cy + rng.uniform(-0.5, 0.5) * r,
            ));
            p.points = points.into();
            sets.push(p);
        }
        push(&format!("random{k}"), s, sets);
    }
    out
}

/// The setting combinations every scene runs with: the defaults, then two
/// others that together change every setting.
fn settings() -> Vec<ClassicPrompt> {
    vec![
        ClassicPrompt::default(),
        ClassicPrompt {
            alpha: 0.35,
            box_margin: 0,
            no_box_margin: 12,
            background_quantile: 0.5,
            border_alpha: 0.2,
            smooth: false,
            fill_holes: false,
        },
        ClassicPrompt {
            alpha: 0.65,
            box_margin: 5,
            no_box_margin: 20,
            background_quantile: 0.9,
            border_alpha: 0.4,
            smooth: true,
            fill_holes: true,
        },
    ]
}

fn settings_json(s: &ClassicPrompt) -> String {
    format!(
        "{{\"alpha\": {:?}, \"box_margin\": {}, \"no_box_margin\": {}, \"background_quantile\": {:?}, \"border_alpha\": {:?}, \"smooth\": {}, \"fill_holes\": {}}}",
        s.alpha, s.box_margin, s.no_box_margin, s.background_quantile, s.border_alpha, s.smooth, s.fill_holes
    )
}

fn set_json(p: &PromptSet) -> String {
    let bbox = match p.bbox.as_ref().into_option() {
        Some(b) => format!("[{:?}, {:?}, {:?}, {:?}]", b.x0, b.y0, b.x1, b.y1),
        None => "null".to_string(),
    };
    let points: Vec<String> = p
        .points
        .iter()
        .map(|q| format!("[{:?}, {:?}, {}]", q.x, q.y, q.positive))
        .collect();
    format!("{{\"bbox\": {bbox}, \"points\": [{}]}}", points.join(", "))
}

fn python() -> String {
    clisc_test_harness::python(
        "this test compares classic-prompt with its NumPy/SciPy reference, \
         tests/reference/classic_prompt_reference.py",
    )
}

/// Runs the reference on `manifest`, writing into `out`.
fn run_reference(manifest: &Path, out: &Path) {
    let python = python();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/classic_prompt_reference.py");
    let result = Command::new(&python)
        .arg(&script)
        .arg(manifest)
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run $CLISC_PYTHON ({python}): {e}"));
    assert!(
        result.status.success(),
        "{python} {} failed ({}):\n{}",
        script.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// One compared prompt set.
struct Outcome {
    case: String,
    rust_area: usize,
    differing: Vec<usize>,
    report: String,
}

/// Writes the scenes, runs the Rust stage and the reference and compares
/// every mask.
fn compare(dir_name: &str) -> Vec<Outcome> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir_name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scenes = scenes();
    let settings = settings();

    let mut manifest = String::from("{\"cases\": [\n");
    let mut rust_masks = Vec::new(); // (case, width, sets' masks)
    let mut first = true;
    for scene in &scenes {
        let image_file = format!("{}.f32", scene.name);
        let bytes: Vec<u8> = scene
            .slice
            .data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(dir.join(&image_file), bytes).unwrap();
        let slice = SliceImage {
            case_id: RString::from(scene.name.as_str()),
            index: 0,
            image: scene.slice.image(),
        };
        for (k, s) in settings.iter().enumerate() {
            let case = format!("{}_s{k}", scene.name);
            let mut seg = s.clone();
            let masks = seg
                .segment(&slice, RSlice::from_slice(&scene.sets))
                .into_result()
                .unwrap_or_else(|e| panic!("{case}: {e:?}"));
            assert_eq!(
                masks.len(),
                scene.sets.len(),
                "{case}: one mask per prompt set"
            );
            let sets: Vec<String> = scene.sets.iter().map(set_json).collect();
            if !first {
                manifest.push_str(",\n");
            }
            first = false;
            write!(
                manifest,
                "{{\"name\": \"{case}\", \"width\": {}, \"height\": {}, \"image\": \"{image_file}\", \"settings\": {}, \"sets\": [{}]}}",
                scene.slice.w,
                scene.slice.h,
                settings_json(s),
                sets.join(", ")
            )
            .unwrap();
            rust_masks.push((case, scene.slice.w, masks));
        }
    }
    manifest.push_str("\n]}\n");
    let manifest_path = dir.join("manifest.json");
    std::fs::write(&manifest_path, manifest).unwrap();
    let out = dir.join("reference");
    run_reference(&manifest_path, &out);

    let levels =
        std::fs::read_to_string(out.join("levels.txt")).expect("levels.txt from the reference");
    let mut outcomes = Vec::new();
    for (case, w, masks) in rust_masks {
        let values = read_f32(&out.join(format!("{case}.values.f32")));
        for (k, m) in masks.iter().enumerate() {
            let path = out.join(format!("{case}.{k}.mask.u8"));
            let reference =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            assert_eq!(
                reference.len(),
                m.data.len(),
                "{case}.{k}: mask sizes differ"
            );
            let t: f32 = levels
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{case} {k} ")))
                .and_then(|rest| rest.split_whitespace().nth(2))
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("{case}.{k}: no threshold in levels.txt"));
            let differing: Vec<usize> = (0..reference.len())
                .filter(|&i| (m.data[i] != 0) != (reference[i] != 0))
                .collect();
            let mut report = String::new();
            for &i in differing.iter().take(12) {
                let v = values[i];
                writeln!(
                    report,
                    "    ({}, {}): rust {} reference {}, value {v} vs t {t}{}",
                    i % w,
                    i / w,
                    m.data[i],
                    reference[i],
                    if (v - t).abs() <= 1e-5 {
                        " (within 1e-5 of t)"
                    } else {
                        ""
                    }
                )
                .unwrap();
            }
            outcomes.push(Outcome {
                case: format!("{case}.{k}"),
                rust_area: m.data.iter().filter(|&&v| v != 0).count(),
                differing,
                report,
            });
        }
    }
    outcomes
}

/// The per-prompt-set table and, for the sets that differ, their pixels.
fn tabulate(outcomes: &[Outcome]) -> (String, String) {
    let mut summary = String::new();
    let mut failures = String::new();
    for o in outcomes {
        writeln!(
            summary,
            "  {:<40} area {:>5}  differing {}",
            o.case,
            o.rust_area,
            o.differing.len()
        )
        .unwrap();
        if !o.differing.is_empty() {
            writeln!(
                failures,
                "  {}: {} differing pixels\n{}",
                o.case,
                o.differing.len(),
                o.report
            )
            .unwrap();
        }
    }
    (summary, failures)
}

/// The stage against the reference written from its module documentation.
#[test]
fn classic_prompt_matches_the_independent_reference() {
    let start = Instant::now();
    let outcomes = compare("classic_prompt_reference");
    // The comparison means something only if the masks are not empty:
    // every prompt set but the two without a positive point and a box has
    // a lesion under it.
    let empty: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.rust_area == 0)
        .map(|o| o.case.as_str())
        .collect();
    let expected_empty = outcomes
        .iter()
        .filter(|o| {
            o.case.starts_with("points_without_box_")
                && (o.case.ends_with(".2") || o.case.ends_with(".3"))
        })
        .count();
    assert_eq!(
        empty.len(),
        expected_empty,
        "unexpectedly empty masks: {empty:?}"
    );
    let (summary, failures) = tabulate(&outcomes);
    eprintln!(
        "classic-prompt vs reference, {} prompt sets in {:.2}s:\n{summary}",
        outcomes.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "classic-prompt and its reference disagree (no floating-point tie is excused: the reference \
         reproduces the f32 arithmetic):\n{failures}"
    );
}
