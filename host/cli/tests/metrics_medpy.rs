//! Dice and HD95 against MedPy (`medpy.metric.binary.dc` / `hd95` with
//! `voxelspacing`), the reference the CLISC paper evaluated with: random
//! blobs, sparse speckle, thin structures, masks touching the volume border
//! and real-shaped tumour masks from `clisc synth`, all with anisotropic
//! spacing. Dice must agree to 1e-6 and HD95 to 1e-3 mm.

use clisc_synth::SynthOptions;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::process::Command;

struct Pair {
    name: String,
    shape: [usize; 3],
    spacing: [f64; 3],
    pred: Vec<u8>,
    gt: Vec<u8>,
}

fn blobs(rng: &mut ChaCha8Rng, shape: [usize; 3], count: usize, max_r: f64) -> Vec<u8> {
    let mut m = vec![0u8; shape.iter().product()];
    for _ in 0..count {
        let c: [f64; 3] = [0, 1, 2].map(|d| rng.random_range(0.0..shape[d] as f64));
        let r: [f64; 3] = [0, 1, 2].map(|_| rng.random_range(1.0..max_r));
        for z in 0..shape[2] {
            for y in 0..shape[1] {
                for x in 0..shape[0] {
                    let d = ((x as f64 - c[0]) / r[0]).powi(2)
                        + ((y as f64 - c[1]) / r[1]).powi(2)
                        + ((z as f64 - c[2]) / r[2]).powi(2);
                    if d <= 1.0 {
                        m[x + shape[0] * (y + shape[1] * z)] = 1;
                    }
                }
            }
        }
    }
    m
}

fn pairs() -> Vec<Pair> {
    let mut rng = ChaCha8Rng::seed_from_u64(2025);
    let mut out = Vec::new();
    for k in 0..24 {
        let shape = [
            rng.random_range(8..48),
            rng.random_range(8..48),
            rng.random_range(4..32),
        ];
        let spacing = [
            rng.random_range(0.4..1.5),
            rng.random_range(0.4..1.5),
            rng.random_range(0.8..5.0),
        ];
        let n: usize = shape.iter().product();
        let (pred, gt) = match k % 4 {
            0 => (
                blobs(&mut rng, shape, 3, 9.0),
                blobs(&mut rng, shape, 2, 12.0),
            ),
            1 => {
                let p: Vec<u8> = (0..n).map(|_| u8::from(rng.random_bool(0.05))).collect();
                let g: Vec<u8> = (0..n).map(|_| u8::from(rng.random_bool(0.02))).collect();
                (p, g)
            }
            2 => {
                // Overlapping: the same blob, perturbed at random voxels.
                let g = blobs(&mut rng, shape, 1, 15.0);
                let p = g
                    .iter()
                    .map(|&v| if rng.random_bool(0.08) { 1 - v } else { v })
                    .collect();
                (p, g)
            }
            _ => {
                // Thin slab touching the border vs a blob.
                let mut p = vec![0u8; n];
                let x0 = rng.random_range(0..shape[0]);
                for z in 0..shape[2] {
                    for y in 0..shape[1] {
                        p[x0 + shape[0] * (y + shape[1] * z)] = 1;
                    }
                }
                (p, blobs(&mut rng, shape, 2, 6.0))
            }
        };
        if pred.iter().all(|&v| v == 0) || gt.iter().all(|&v| v == 0) {
            continue;
        }
        out.push(Pair {
            name: format!("random-{k}"),
            shape,
            spacing,
            pred,
            gt,
        });
    }
    // Real-shaped: whole-tumour and enhancing masks of synthetic cases, and
    // two different cases against each other (far apart, large distances).
    let opts = SynthOptions {
        shape: [96, 96, 64],
        seed: 31,
        ..Default::default()
    };
    let cases: Vec<_> = (0..3).map(|i| clisc_synth::generate(i, &opts)).collect();
    for (i, c) in cases.iter().enumerate() {
        let wt: Vec<u8> = c.seg.iter().map(|&l| u8::from(l > 0)).collect();
        let core: Vec<u8> = c.seg.iter().map(|&l| u8::from(l == 1 || l == 4)).collect();
        let other: Vec<u8> = cases[(i + 1) % 3]
            .seg
            .iter()
            .map(|&l| u8::from(l > 0))
            .collect();
        let spacing = [[1.0, 1.0, 1.0], [0.9375, 0.9375, 3.0], [1.2, 0.8, 2.2]][i];
        out.push(Pair {
            name: format!("synth-{i}-wt-vs-core"),
            shape: opts.shape,
            spacing,
            pred: core.clone(),
            gt: wt.clone(),
        });
        if core.iter().any(|&v| v != 0) && other.iter().any(|&v| v != 0) {
            out.push(Pair {
                name: format!("synth-{i}-wt-vs-other"),
                shape: opts.shape,
                spacing,
                pred: wt,
                gt: other,
            });
        }
    }
    // One full BraTS-sized pair.
    let big = clisc_synth::generate(
        0,
        &SynthOptions {
            shape: [240, 240, 155],
            seed: 4,
            ..Default::default()
        },
    );
    let wt: Vec<u8> = big.seg.iter().map(|&l| u8::from(l > 0)).collect();
    let et: Vec<u8> = big
        .seg
        .iter()
        .map(|&l| u8::from(l == 4 || l == 1))
        .collect();
    out.push(Pair {
        name: "synth-full-wt-vs-core".into(),
        shape: [240, 240, 155],
        spacing: [1.0, 1.0, 1.0],
        pred: et,
        gt: wt,
    });
    out
}

#[test]
fn dice_and_hd95_agree_with_medpy() {
    let python = std::env::var("CLISC_PYTHON").expect(
        "CLISC_PYTHON is not set: run `source scripts/env.sh` (it provides a Python with medpy) before this test",
    );
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs();
    let mut manifest = Vec::new();
    for (k, p) in pairs.iter().enumerate() {
        let pp = dir.path().join(format!("{k}_pred.u8"));
        let gp = dir.path().join(format!("{k}_gt.u8"));
        std::fs::write(&pp, &p.pred).unwrap();
        std::fs::write(&gp, &p.gt).unwrap();
        manifest.push(serde_json::json!({
            "name": p.name, "shape": p.shape, "spacing": p.spacing,
            "pred": pp.display().to_string(), "gt": gp.display().to_string(),
        }));
    }
    let mpath = dir.path().join("manifest.json");
    std::fs::write(&mpath, serde_json::to_string(&manifest).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/medpy_metrics.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&mpath)
        .output()
        .expect("running medpy");
    assert!(
        out.status.success(),
        "medpy script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reference.len(), pairs.len());
    let (mut worst_dice, mut worst_hd) = (0.0f64, 0.0f64);
    for (p, r) in pairs.iter().zip(&reference) {
        let d = clisc_metrics::dice(&p.pred, &p.gt);
        let h = clisc_metrics::hd95(&p.pred, &p.gt, p.shape, p.spacing).expect("both non-empty");
        let rd = r["dice"].as_f64().unwrap();
        let rh = r["hd95"].as_f64().unwrap();
        worst_dice = worst_dice.max((d - rd).abs());
        worst_hd = worst_hd.max((h - rh).abs());
        assert!((d - rd).abs() <= 1e-6, "{}: dice {d} vs medpy {rd}", p.name);
        assert!((h - rh).abs() <= 1e-3, "{}: hd95 {h} vs medpy {rh}", p.name);
    }
    println!(
        "{} pairs: max |dice - medpy| = {worst_dice:.2e}, max |hd95 - medpy| = {worst_hd:.2e} mm",
        pairs.len()
    );
}
