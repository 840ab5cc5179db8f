//! HD95 and Dice timing on BraTS-sized (240 x 240 x 155, 1 mm) pairs of
//! synthetic masks; prints one Markdown table row per pair. Run through
//! `bench/hd95_timing.sh` (release build), which records the rows in
//! `bench/results/hd95_timing.md`.

use clisc_synth::SynthOptions;
use std::time::Instant;

/// Timed repetitions of each measurement (the mean is reported).
const RUNS: u32 = 5;

fn mask(labels: &[u8], keep: fn(u8) -> bool) -> Vec<u8> {
    labels.iter().map(|&l| u8::from(keep(l))).collect()
}

/// Mean seconds of `RUNS` calls of `f`, and its last result.
fn timed<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let start = Instant::now();
    let mut out = f();
    for _ in 1..RUNS {
        out = f();
    }
    (start.elapsed().as_secs_f64() / f64::from(RUNS), out)
}

fn main() {
    let shape = [240, 240, 155];
    let options = SynthOptions {
        shape,
        seed: 11,
        ..Default::default()
    };
    let a = clisc_synth::generate(0, &options);
    let b = clisc_synth::generate(1, &options);
    let brain = |case: &clisc_synth::SynthCase| -> Vec<u8> {
        case.images[3].iter().map(|&v| u8::from(v > 0.0)).collect()
    };
    let whole_a = mask(&a.seg, |l| l > 0);
    let core_a = mask(&a.seg, |l| l == 1 || l == 4);
    let whole_b = mask(&b.seg, |l| l > 0);
    let (brain_a, brain_b) = (brain(&a), brain(&b));
    let spacing = [1.0, 1.0, 1.0];
    println!("| pair | HD95 (mm) | HD95 time (ms) | Dice | Dice time (ms) |");
    println!("|---|---|---|---|---|");
    for (name, p, g) in [
        ("tumour core vs whole tumour (same case)", &core_a, &whole_a),
        ("whole tumours of two cases", &whole_a, &whole_b),
        (
            "whole brains of two cases (box = brain)",
            &brain_a,
            &brain_b,
        ),
    ] {
        let (t_hd, hd) = timed(|| clisc_metrics::hd95(p, g, shape, spacing));
        let (t_dice, dice) = timed(|| clisc_metrics::dice(p, g));
        let hd = hd.map_or("n/a".to_string(), |h| format!("{h:.3}"));
        println!(
            "| {name} | {hd} | {:.1} | {dice:.4} | {:.2} |",
            t_hd * 1e3,
            t_dice * 1e3
        );
    }
}
