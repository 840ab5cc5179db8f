//! BraTS-like synthetic cases for tests and demos without downloads.
//!
//! Each case is a skull-stripped brain (background exactly 0) made of grey
//! matter (folded cortex with sulci, deep nuclei), white matter and CSF
//! (sulci, interhemispheric fissure, lateral and third ventricles), imaged
//! in four co-registered modalities with modality-appropriate contrast
//! (T1: WM > GM > CSF; T1ce: like T1 plus an enhancing tumour rim; T2: CSF
//! and oedema bright; FLAIR: CSF suppressed, oedema and tumour bright),
//! a smooth multiplicative bias field per modality and Rician noise.
//! One or two gliomas per case: irregular (noise-perturbed, anisotropic,
//! rotated) cores with an enhancing rim (label 4) around necrosis (label 1)
//! or non-enhancing (label 1) cores, surrounded by oedema (label 2) that
//! spreads in white matter, with a mass effect that pushes the anatomy
//! away. Sizes range from small to large, so many axial slices hold no
//! tumour. Brain size, position, rotation, ventricle size, contrast, bias
//! and noise vary per case. Everything is a deterministic function of the
//! seed and the case index; voxels are 1 mm with the BraTS affine
//! (`diag(-1, -1, 1)`, y origin at `ny - 1`).
//!
//! Anatomy is defined on a 240 x 240 x 155 "standard" brain and scaled to
//! the requested shape, so small shapes (e.g. 96 x 96 x 64) show the same
//! brain, coarser (fine structures are kept at least a few voxels wide).
#![warn(unreachable_pub)]

pub mod noise;
pub mod preview;

use clisc_nifti::NiftiError;
use clisc_sdk::{Grid, LabelVolume};
use noise::{gauss, hash64, ValueNoise};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// The four modalities, in the order of [`SynthCase::images`].
pub const MODALITIES: [&str; 4] = ["t1", "t1ce", "t2", "flair"];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthOptions {
    /// Volume shape (x, y, z); BraTS is 240 x 240 x 155.
    pub shape: [usize; 3],
    /// Seed; the same seed and index always give the same case.
    pub seed: u64,
    /// Fraction of cases without any tumour (0 by default, like BraTS).
    pub healthy_fraction: f64,
    /// Worker threads (1 = none).
    pub threads: usize,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            shape: [240, 240, 155],
            seed: 0,
            healthy_fraction: 0.0,
            threads: 2,
        }
    }
}

/// One generated case.
#[derive(Debug, Clone)]
pub struct SynthCase {
    /// Case id, `BraTS20_Training_NNN`.
    pub id: String,
    /// Geometry (1 mm, BraTS affine).
    pub grid: Grid,
    /// T1, T1ce, T2, FLAIR voxels (x-fastest), in [`MODALITIES`] order.
    pub images: [Vec<f32>; 4],
    /// BraTS labels: 0 background, 1 necrotic / non-enhancing core,
    /// 2 oedema, 4 enhancing tumour.
    pub seg: Vec<u8>,
}

/// The BraTS-style id of case `index` (0-based): `BraTS20_Training_001`, ...
pub fn case_id(index: usize) -> String {
    format!("BraTS20_Training_{:03}", index + 1)
}

/// The grid of synthetic cases of `shape`: 1 mm, BraTS orientation.
pub(crate) fn brats_grid(shape: [usize; 3]) -> Grid {
    let mut g = Grid::new(shape.map(|s| s as u32), [1.0; 3]);
    g.affine[0][0] = -1.0;
    g.affine[1][1] = -1.0;
    g.affine[1][3] = (shape[1] as f64 - 1.0).max(0.0);
    g
}

/// Tissue classes, indices into the contrast table.
const CSF: usize = 0;
const GM: usize = 1;
const WM: usize = 2;
const DGM: usize = 3;
const EDEMA: usize = 4;
const ENH: usize = 5;
const NEC: usize = 6;
const NET: usize = 7;
const TISSUES: usize = 8;

/// Relative intensities per modality (rows: T1, T1ce, T2, FLAIR) and tissue
/// (CSF, GM, WM, deep GM, oedema, enhancing, necrosis, non-enhancing core).
const CONTRAST: [[f32; TISSUES]; 4] = [
    [0.28, 0.60, 0.86, 0.67, 0.55, 0.62, 0.30, 0.46],
    [0.30, 0.62, 0.86, 0.69, 0.57, 1.55, 0.30, 0.50],
    [1.00, 0.55, 0.37, 0.47, 0.84, 0.62, 0.95, 0.80],
    [0.15, 0.62, 0.46, 0.55, 1.00, 0.80, 0.55, 0.90],
];

/// One lesion's parameters, in standard-brain millimetres.
struct Lesion {
    centre: [f32; 3],
    radius: f32,
    /// Rows of the anisotropic rotation-scaling applied to `q - centre`.
    shape: [[f32; 3]; 3],
    rim: f32,
    necrotic: bool,
    enhancing: bool,
    edema_reach: f32,
    mass: f32,
    n_coarse: ValueNoise,
    n_fine: ValueNoise,
    n_edema: ValueNoise,
    n_patch: ValueNoise,
}

/// Per-case parameters.
struct Params {
    shape: [usize; 3],
    /// Voxels per standard millimetre, per axis.
    scale: [f32; 3],
    centre: [f32; 3],
    rot: (f32, f32),
    radii: [f32; 3],
    ventricle: f32,
    gains: [f32; 4],
    contrast: [[f32; TISSUES]; 4],
    noise_sigma: f32,
    bias_strength: f32,
    bias_dir: [[f32; 3]; 4],
    lesions: Vec<Lesion>,
    n_surf: ValueNoise,
    n_fold1: ValueNoise,
    n_fold2: ValueNoise,
    n_tex: ValueNoise,
    n_bias: [ValueNoise; 4],
    /// Smallest feature size in standard mm that stays >= ~1.5 voxels.
    min_feature: f32,
    seed: u64,
}

fn smoothstep(edge0: f32, edge1: f32, x: f32) -> f32 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Membership in [0, 1] for a normalised distance `d` (1 = boundary) with a
/// soft edge of `e` (normalised).
fn inside(d: f32, e: f32) -> f32 {
    1.0 - smoothstep(1.0 - e, 1.0 + e, d)
}

fn random_rotation(rng: &mut ChaCha8Rng) -> [[f32; 3]; 3] {
    // Uniform random unit quaternion.
    let (u1, u2, u3): (f32, f32, f32) = (rng.random(), rng.random(), rng.random());
    let tau = std::f32::consts::TAU;
    let (a, b, c, d) = (
        (1.0 - u1).sqrt() * (tau * u2).sin(),
        (1.0 - u1).sqrt() * (tau * u2).cos(),
        u1.sqrt() * (tau * u3).sin(),
        u1.sqrt() * (tau * u3).cos(),
    );
    [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - b * b - c * c,
        ],
    ]
}

impl Params {
    fn new(index: usize, opts: &SynthOptions) -> Params {
        let seed = hash64(opts.seed ^ hash64(index as u64 + 0x5EED));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = opts.shape;
        let scale = [
            shape[0] as f32 / 240.0,
            shape[1] as f32 / 240.0,
            shape[2] as f32 / 155.0,
        ];
        let smin = scale
            .iter()
            .cloned()
            .fold(f32::INFINITY, f32::min)
            .max(1e-3);
        let min_feature = 1.6 / smin;
        let jitter = |rng: &mut ChaCha8Rng, r: f32| rng.random_range(-r..=r);
        let centre = [
            shape[0] as f32 / 2.0 + jitter(&mut rng, 4.0) * scale[0],
            shape[1] as f32 / 2.0 + jitter(&mut rng, 5.0) * scale[1],
            shape[2] as f32 * 0.52 + jitter(&mut rng, 3.0) * scale[2],
        ];
        let angle: f32 = jitter(&mut rng, 0.12);
        let size = rng.random_range(0.93..1.05f32);
        let radii = [
            70.0 * size * rng.random_range(0.96..1.04f32),
            84.0 * size * rng.random_range(0.96..1.04f32),
            60.0 * size * rng.random_range(0.96..1.04f32),
        ];
        let lo = [-130.0f32, -130.0, -90.0];
        let hi = [130.0f32, 130.0, 90.0];
        let noise = |s: u64, wl: f32| ValueNoise::new(hash64(seed ^ s), lo, hi, wl);
        let fold = 11.0f32.max(2.6 * min_feature);
        let mut contrast = CONTRAST;
        for row in contrast.iter_mut() {
            for v in row.iter_mut() {
                *v *= rng.random_range(0.95..1.05f32);
            }
        }
        let gains = [
            rng.random_range(350.0..480.0f32),
            rng.random_range(420.0..600.0f32),
            rng.random_range(600.0..850.0f32),
            rng.random_range(300.0..420.0f32),
        ];
        let mut bias_dir = [[0.0f32; 3]; 4];
        for b in bias_dir.iter_mut() {
            *b = [
                jitter(&mut rng, 1.0),
                jitter(&mut rng, 1.0),
                jitter(&mut rng, 1.0),
            ];
        }
        let healthy = rng.random::<f64>() < opts.healthy_fraction;
        let mut lesions = Vec::new();
        if !healthy {
            let count = if rng.random::<f32>() < 0.35 { 2 } else { 1 };
            for k in 0..count {
                let radius = if k == 0 {
                    // Log-uniform from small to large cores.
                    (rng.random_range(6.0f32.ln()..27.0f32.ln())).exp()
                } else {
                    rng.random_range(5.0..13.0f32)
                };
                let radius = radius.max(1.2 * min_feature);
                let centre = loop {
                    let c = [
                        jitter(&mut rng, 50.0),
                        jitter(&mut rng, 65.0),
                        rng.random_range(-30.0..38.0f32),
                    ];
                    let r = ((c[0] / radii[0]).powi(2)
                        + (c[1] / radii[1]).powi(2)
                        + (c[2] / radii[2]).powi(2))
                    .sqrt();
                    let room = 1.0 - (radius + 6.0) / 62.0;
                    if r < room.max(0.3) && c[0].abs() > 12.0 {
                        break c;
                    }
                };
                let rot = random_rotation(&mut rng);
                let axes = [
                    rng.random_range(0.75..1.3f32),
                    rng.random_range(0.75..1.3f32),
                    rng.random_range(0.75..1.3f32),
                ];
                let mut m = rot;
                for (row, a) in m.iter_mut().zip(axes) {
                    for v in row.iter_mut() {
                        *v /= a;
                    }
                }
                let low_grade = rng.random::<f32>() < 0.2;
                let sk = 100 + k as u64 * 10;
                lesions.push(Lesion {
                    centre,
                    radius,
                    shape: m,
                    rim: rng.random_range(0.22..0.45),
                    necrotic: !low_grade && radius > 9.0 && rng.random::<f32>() < 0.85,
                    enhancing: !low_grade,
                    edema_reach: rng.random_range(1.5..2.6),
                    mass: 0.3 * (radius / 25.0).min(1.0),
                    n_coarse: noise(sk + 1, (radius * 0.9).max(2.0 * min_feature)),
                    n_fine: noise(sk + 2, (radius * 0.35).max(1.5 * min_feature)),
                    n_edema: noise(sk + 3, 11.0f32.max(2.0 * min_feature)),
                    n_patch: noise(sk + 4, (radius * 0.4).max(1.5 * min_feature)),
                });
            }
        }
        Params {
            shape,
            scale,
            centre,
            rot: (angle.cos(), angle.sin()),
            radii,
            ventricle: rng.random_range(0.75..1.35),
            gains,
            contrast,
            noise_sigma: rng.random_range(0.015..0.035),
            bias_strength: rng.random_range(0.06..0.16),
            bias_dir,
            lesions,
            n_surf: noise(1, 30.0),
            n_fold1: noise(2, fold),
            n_fold2: noise(3, fold * 0.5),
            n_tex: noise(4, 3.0f32.max(min_feature)),
            n_bias: [
                noise(11, 90.0),
                noise(12, 90.0),
                noise(13, 90.0),
                noise(14, 90.0),
            ],
            min_feature,
            seed,
        }
    }

    /// Standard-brain coordinates (mm) of voxel `(x, y, z)`; `q[1] < 0` is
    /// anterior.
    fn brain_coords(&self, x: usize, y: usize, z: usize) -> [f32; 3] {
        let d = [
            (x as f32 - self.centre[0]) / self.scale[0],
            (y as f32 - self.centre[1]) / self.scale[1],
            (z as f32 - self.centre[2]) / self.scale[2],
        ];
        let (c, s) = self.rot;
        [c * d[0] - s * d[1], s * d[0] + c * d[1], d[2]]
    }

    /// Tissue fractions (CSF, GM, WM, deep GM) and the brain membership at
    /// anatomical position `q`; `None` outside the brain.
    fn anatomy(&self, q: [f32; 3]) -> Option<[f32; 4]> {
        let [qx, qy, qz] = q;
        let ant = -qy;
        let zn = qz / self.radii[2];
        // Narrower frontal lobes, smaller inferior brain (temporal lobes,
        // cerebellum), flattened base.
        let mut rx = self.radii[0] * (1.0 - 0.10 * ant / self.radii[1]);
        let mut ry = self.radii[1];
        if zn < -0.25 {
            let f = ((-zn - 0.25) / 0.75).min(1.0);
            rx *= 1.0 - 0.25 * f * f;
            ry *= 1.0 - 0.20 * f * f;
        }
        let surf = self.n_surf.at(q);
        let r = ((qx / rx).powi(2)
            + (qy / ry).powi(2)
            + (zn * if zn < 0.0 { 1.12 } else { 1.0 }).powi(2))
        .sqrt()
            * (1.0 + 0.035 * surf);
        if r >= 1.0 {
            return None;
        }
        let depth = (1.0 - r) * 62.0;
        // Cortex: CSF sheets (sulci) along the zero set of a folding field.
        let g = 0.7 * self.n_fold1.at(q) + 0.3 * self.n_fold2.at(q);
        let sulcal_depth = 16.0 + 6.0 * surf;
        let d_sulcus = g.abs() * 9.0 + (depth - sulcal_depth).max(0.0) * 1.5;
        let half = 0.5 * self.min_feature;
        let csf_sulcus = 1.0 - smoothstep(0.7 - half, 0.7 + half, d_sulcus);
        let dc = d_sulcus.min(depth);
        let thick = 3.0f32.max(1.8 * self.min_feature);
        let gm = smoothstep(thick + half, thick - half, dc);
        let mut f = [csf_sulcus, (gm - csf_sulcus).max(0.0), 0.0, 0.0];
        f[WM] = (1.0 - f[CSF] - f[GM]).max(0.0);
        // Interhemispheric fissure (not through the corpus callosum).
        let fissure_zone = smoothstep(8.0, 16.0, qz)
            .max(smoothstep(28.0, 36.0, ant))
            .max(smoothstep(36.0, 44.0, -ant));
        if fissure_zone > 0.0 {
            let w = 1.0f32.max(0.6 * self.min_feature);
            let c = fissure_zone * (1.0 - smoothstep(w - half, w + half, qx.abs()));
            let gmf =
                fissure_zone * (1.0 - smoothstep(w + thick - half, w + thick + half, qx.abs()));
            let wm_take = f[WM].min(gmf);
            f[WM] -= wm_take;
            f[GM] += wm_take;
            let scale = 1.0 - c;
            f.iter_mut().for_each(|v| *v *= scale);
            f[CSF] += c;
        }
        // Deep grey nuclei: thalamus, caudate head, putamen.
        let ax = qx.abs();
        let mut dgm = 0.0f32;
        for (c, rr) in [
            ([10.0, -8.0, -2.0], [8.0, 13.0, 9.0]),
            ([12.0, 15.0, 7.0], [4.5, 8.0, 7.0]),
            ([24.0, 4.0, -2.0], [5.0, 13.0, 8.0]),
        ] {
            let d = (((ax - c[0]) / rr[0]).powi(2)
                + ((ant - c[1]) / rr[1]).powi(2)
                + ((qz - c[2]) / rr[2]).powi(2))
            .sqrt();
            dgm = dgm.max(inside(d, 0.15));
        }
        let take = f[WM] * dgm;
        f[WM] -= take;
        f[DGM] += take;
        // Lateral ventricles (arched bodies, frontal horns) and third ventricle.
        let v = self.ventricle;
        let len = 28.0;
        let an = (ant / len).clamp(-1.0, 1.0);
        let xc = (4.5 + 5.0 * an * an + if ant > 0.0 { 2.0 * an } else { 0.0 }) * v.sqrt();
        let hw = (2.5 + 2.0 * (1.0 - an * an) + if ant > 0.0 { 1.5 * an } else { 0.0 }) * v;
        let zc = 9.0 - 9.0 * an * an;
        let hh = (5.5 + 2.5 * (1.0 - an * an)) * v;
        let over = (ant.abs() - len).max(0.0) / hw.max(1.0);
        let dv = (((ax - xc) / hw.max(0.6 * self.min_feature)).powi(2)
            + ((qz - zc) / hh).powi(2)
            + over * over)
            .sqrt();
        let third = (((qx) / (1.2f32.max(0.5 * self.min_feature))).powi(2)
            + ((ant + 2.0) / 12.0).powi(2)
            + ((qz + 3.0) / 8.0).powi(2))
        .sqrt();
        let ven = inside(dv, 0.2).max(inside(third, 0.2));
        if ven > 0.0 {
            f.iter_mut().for_each(|x| *x *= 1.0 - ven);
            f[CSF] += ven;
        }
        Some(f)
    }

    /// Fills slab `z0..z1` of the outputs.
    fn render_slab(&self, z0: usize, z1: usize, images: [&mut [f32]; 4], seg: &mut [u8]) {
        let [nx, ny, _] = self.shape;
        let [img_t1, img_t1ce, img_t2, img_flair] = images;
        let mut outs = [img_t1, img_t1ce, img_t2, img_flair];
        for z in z0..z1 {
            for y in 0..ny {
                for x in 0..nx {
                    let i = x + nx * (y + ny * (z - z0));
                    let q = self.brain_coords(x, y, z);
                    let (tissue, label) = match self.voxel(q) {
                        None => {
                            for o in outs.iter_mut() {
                                o[i] = 0.0;
                            }
                            seg[i] = 0;
                            continue;
                        }
                        Some(t) => t,
                    };
                    seg[i] = label;
                    let tex = 1.0 + 0.035 * self.n_tex.at(q);
                    let h = hash64(self.seed ^ hash64((x + nx * (y + ny * z)) as u64));
                    for (m, o) in outs.iter_mut().enumerate() {
                        let mut s = 0.0f32;
                        for (t, w) in tissue.iter().enumerate() {
                            if *w > 0.0 {
                                s += w * self.contrast[m][t];
                            }
                        }
                        let dir = self.bias_dir[m];
                        let lin = (dir[0] * q[0] + dir[1] * q[1] + dir[2] * q[2]) / 90.0;
                        let bias = (self.bias_strength * (self.n_bias[m].at(q) + 0.6 * lin)).exp();
                        let signal = s * tex * bias * self.gains[m];
                        let sigma = self.noise_sigma * self.gains[m];
                        let hm = hash64(h ^ (m as u64 + 1));
                        let (g1, g2) = (gauss(hm), gauss(hash64(hm)));
                        let v = ((signal + sigma * g1).powi(2) + (sigma * g2).powi(2)).sqrt();
                        // Background is exactly 0, the brain strictly positive.
                        o[i] = v.max(1e-2);
                    }
                }
            }
        }
    }

    /// Tissue fractions (all eight classes) and the BraTS label at `q`.
    fn voxel(&self, q: [f32; 3]) -> Option<([f32; TISSUES], u8)> {
        // Mass effect: anatomy is pushed away from each lesion centre.
        let mut qa = q;
        for l in &self.lesions {
            let d: [f32; 3] = [0, 1, 2].map(|k| qa[k] - l.centre[k]);
            let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            let s = 1.3 * l.radius;
            let k = 1.0 - l.mass * (-r2 / (2.0 * s * s)).exp();
            qa = [0, 1, 2].map(|j| l.centre[j] + d[j] * k);
        }
        let a = self.anatomy(qa)?;
        let mut t = [0.0f32; TISSUES];
        t[..4].copy_from_slice(&a);
        let (mut edema, mut enh, mut nec, mut net) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for l in &self.lesions {
            let d: [f32; 3] = [0, 1, 2].map(|k| q[k] - l.centre[k]);
            let dist = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
            if dist > l.radius * (l.edema_reach + 1.2) + 8.0 {
                continue;
            }
            let e = self.min_feature / l.radius;
            // Oedema: irregular halo, mostly in white matter.
            let le = dist / (l.radius * l.edema_reach) + 0.4 * l.n_edema.at(q);
            let ed = inside(le, 0.08);
            let susceptible = t[WM] + t[DGM] + 0.35 * t[GM];
            edema = edema.max(ed * susceptible);
            // Core: anisotropic, rotated, noise-perturbed.
            let m = &l.shape;
            let u = [0, 1, 2].map(|r| m[r][0] * d[0] + m[r][1] * d[1] + m[r][2] * d[2]);
            let lc = (u[0] * u[0] + u[1] * u[1] + u[2] * u[2]).sqrt() / l.radius
                + 0.28 * l.n_coarse.at(q)
                + 0.10 * l.n_fine.at(q);
            let core = inside(lc, e);
            if core <= 0.0 {
                continue;
            }
            let rim = (l.rim * (1.0 + 0.6 * l.n_fine.at([q[1], q[2], q[0]]))).clamp(0.08, 0.7);
            let necrosis = if l.necrotic {
                inside(lc / (1.0 - rim), e / (1.0 - rim))
            } else {
                0.0
            };
            let solid = (core - necrosis).max(0.0);
            let patch = if l.enhancing {
                smoothstep(0.25, 0.45, l.n_patch.at(q))
            } else {
                1.0
            };
            enh = enh.max(solid * (1.0 - patch));
            net = net.max(solid * patch);
            nec = nec.max(necrosis);
        }
        let core = (enh + net + nec).min(1.0);
        let edema = edema.min(1.0 - core);
        let keep = (1.0 - core - edema).max(0.0);
        let total_anat: f32 = t[..4].iter().sum::<f32>().max(1e-6);
        for v in t[..4].iter_mut() {
            *v *= keep / total_anat;
        }
        t[EDEMA] = edema;
        t[ENH] = enh;
        t[NEC] = nec;
        t[NET] = net;
        let label = if core >= 0.5 {
            if enh >= nec.max(net) {
                4
            } else {
                1
            }
        } else if core + edema >= 0.5 {
            2
        } else {
            0
        };
        Some((t, label))
    }
}

/// Generates case `index` (0-based) for `opts`.
pub fn generate(index: usize, opts: &SynthOptions) -> SynthCase {
    let p = Params::new(index, opts);
    let grid = brats_grid(opts.shape);
    let n = grid.len();
    let [nx, ny, nz] = opts.shape;
    let mut images: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0.0f32; n]);
    let mut seg = vec![0u8; n];
    let threads = opts.threads.clamp(1, 64).min(nz.max(1));
    let slab = nz.div_ceil(threads).max(1);
    let chunk = nx * ny * slab;
    {
        let [a, b, c, d] = &mut images;
        let mut parts: Vec<_> = a
            .chunks_mut(chunk)
            .zip(b.chunks_mut(chunk))
            .zip(c.chunks_mut(chunk))
            .zip(d.chunks_mut(chunk))
            .zip(seg.chunks_mut(chunk))
            .enumerate()
            .collect();
        std::thread::scope(|s| {
            let p = &p;
            for (k, ((((a, b), c), d), sg)) in parts.drain(..) {
                let z0 = k * slab;
                let z1 = (z0 + slab).min(nz);
                s.spawn(move || p.render_slab(z0, z1, [a, b, c, d], sg));
            }
        });
    }
    SynthCase {
        id: case_id(index),
        grid,
        images,
        seg,
    }
}

/// Writes a case in the BraTS 2020 layout under `root`:
/// `root/<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz`. Returns the case folder.
pub fn write_case(root: &Path, case: &SynthCase) -> Result<PathBuf, NiftiError> {
    let dir = root.join(&case.id);
    for (m, data) in MODALITIES.iter().zip(&case.images) {
        clisc_nifti::write_f32(
            &dir.join(format!("{}_{m}.nii.gz", case.id)),
            &case.grid,
            data,
            None,
        )?;
    }
    let seg = LabelVolume {
        grid: case.grid,
        data: case.seg.clone().into(),
    };
    clisc_nifti::write_labels(&dir.join(format!("{}_seg.nii.gz", case.id)), &seg, None)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_case_is_deterministic_and_brats_like() {
        let opts = SynthOptions {
            shape: [64, 64, 40],
            seed: 9,
            ..Default::default()
        };
        let a = generate(0, &opts);
        let b = generate(0, &SynthOptions { threads: 1, ..opts });
        assert_eq!(a.images, b.images);
        assert_eq!(a.seg, b.seg);
        let c = generate(1, &opts);
        assert_ne!(a.seg, c.seg);
        let flair = &a.images[3];
        let brain = flair.iter().filter(|&&v| v > 0.0).count();
        assert!(
            brain > a.grid.len() / 8 && brain < a.grid.len() * 3 / 4,
            "brain voxels {brain}"
        );
        for img in &a.images {
            // Same brain mask in every modality.
            assert!(img.iter().zip(flair).all(|(x, f)| (*x > 0.0) == (*f > 0.0)));
        }
        assert!(a.seg.iter().all(|l| [0, 1, 2, 4].contains(l)));
        assert!(a.seg.iter().zip(flair).all(|(l, f)| *l == 0 || *f > 0.0));
        let tumour = a.seg.iter().filter(|&&l| l > 0).count();
        assert!(tumour > 0);
        // FLAIR: tumour + oedema brighter than the brain on average.
        let mean = |sel: &dyn Fn(usize) -> bool| {
            let v: Vec<f32> = (0..flair.len())
                .filter(|&i| sel(i))
                .map(|i| flair[i])
                .collect();
            v.iter().sum::<f32>() / v.len().max(1) as f32
        };
        let wt = mean(&|i| a.seg[i] == 2);
        let normal = mean(&|i| a.seg[i] == 0 && flair[i] > 0.0);
        assert!(wt > normal * 1.3, "oedema {wt} vs brain {normal}");
        // Some axial slices without tumour.
        let per_slice = a.grid.slice_len();
        let empty = (0..40)
            .filter(|z| {
                a.seg[z * per_slice..(z + 1) * per_slice]
                    .iter()
                    .all(|&l| l == 0)
            })
            .count();
        assert!(empty > 5);
    }
}
