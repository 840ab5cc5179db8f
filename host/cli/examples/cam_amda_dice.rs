//! Measures the `cam` ROI extractor on synthetic cases: ROI Dice against
//! the ground truth for the first classifier's CAM (`initial`) and after
//! adaptive masking (`amda-1`, ...), for several thresholds, and writes
//! montages of the held-out cases.
//!
//! The classifier is trained on pseudo-labels taken from the ground truth
//! (slice label = tumour area > 0, every slice with brain kept), so this
//! measures the CAM/AMDA/ROI stage alone. Ground truth is only used for
//! the labels fed in and for scoring; the ROI itself is unsupervised.
//!
//! ```text
//! cargo run -p clisc --example cam_amda_dice -- OUT_DIR [cases=8] [train=6] [shape=96] [input=112] [epochs=4] [extra TOML]
//! ```

use clisc_cam::amda::Threshold;
use clisc_cam::plugin::{CamExtractor, CamPlugin, CamSettings};
use clisc_cam::roi::roi_from_cam;
use clisc_dataset::preprocess::{preprocess, PreprocessOptions};
use clisc_imaging::overlap::dice;
use clisc_report::montage::{write_montage, Contour, MontageInput};
use clisc_sdk::config::{resolve, Settings};
use clisc_sdk::{
    CaseInput, HostContext, LabelVolume, LabelledCase, Plugin, SliceLabel, SlicePseudoLabels,
    Volume,
};
use clisc_synth::{generate, SynthOptions};
use clisc_weight_free::box_points::BoxPoints;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(args.first().map_or("/tmp/cam-dice", |s| s.as_str()));
    let arg = |i: usize, d: usize| {
        args.get(i)
            .map_or(d, |s| s.parse().expect("integer argument"))
    };
    let (n_cases, n_train, side, input, epochs) =
        (arg(1, 8), arg(2, 6), arg(3, 96), arg(4, 112), arg(5, 4));
    let extra = args.get(6).cloned().unwrap_or_default();
    std::fs::create_dir_all(&out)?;
    let t0 = Instant::now();
    let opts = SynthOptions {
        shape: [side, side, (side * 2 / 3).max(16)],
        seed: 11,
        threads: 2,
        ..Default::default()
    };
    let mut cases: Vec<(CaseInput, SlicePseudoLabels, LabelVolume)> = Vec::new();
    for i in 0..n_cases {
        let s = generate(i, &opts);
        let raw = Volume::single(s.grid, "flair", s.images[3].clone());
        let pre = preprocess(&s.id, &raw, &PreprocessOptions::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let whole = LabelVolume {
            grid: s.grid,
            data: s
                .seg
                .iter()
                .map(|&v| u8::from(v > 0))
                .collect::<Vec<_>>()
                .into(),
        };
        let gt = pre
            .geometry
            .to_working(&whole)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let g = pre.input.image.grid;
        let n = g.slice_len();
        let slices = (0..g.shape[2] as usize)
            .map(|z| {
                let tumour = gt.data[z * n..(z + 1) * n].iter().any(|&v| v != 0);
                let brain = pre.input.brain_mask.data[z * n..(z + 1) * n]
                    .iter()
                    .filter(|&&v| v != 0)
                    .count();
                SliceLabel {
                    index: z as u32,
                    label: u8::from(tumour),
                    probability: 1.0,
                    kept: brain >= 100,
                }
            })
            .collect();
        cases.push((pre.input, SlicePseudoLabels { slices }, gt));
    }
    println!(
        "synth + preprocess: {:.1}s, grid {:?}",
        t0.elapsed().as_secs_f64(),
        cases[0].0.image.grid.shape
    );
    let text = format!(
        "arch = \"resnet18\"\ninput_size = {input}\nepochs = {epochs}\nbatch_size = 32\n{extra}"
    );
    let table: toml::Table = toml::from_str(&text)?;
    let schema = CamPlugin::settings();
    let resolved = resolve(&schema, &table).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let settings = CamSettings::from_settings(&Settings::parse(
        "cam",
        &toml::to_string(&resolved)?,
        &schema,
    )?)?;
    println!("settings: {settings:?}");
    let work = out.join("work");
    let ctx = HostContext {
        threads: 2,
        ..HostContext::for_tests(work.to_str().unwrap(), 1)
    };
    let mut stage = CamExtractor::new(settings, &ctx)?;
    let train: Vec<LabelledCase> = cases[..n_train]
        .iter()
        .map(|(c, l, _)| LabelledCase {
            case: c.clone(),
            labels: l.clone(),
        })
        .collect();
    let t1 = Instant::now();
    let report = stage.fit_cases(&train)?;
    println!("fit: {:.1}s", t1.elapsed().as_secs_f64());
    for m in report.metrics.iter() {
        println!("  {} = {:.4}", m.name, m.value);
    }
    let thresholds = ["0.3", "0.4", "0.5", "0.6", "0.7", "otsu"];
    let mut table: std::collections::BTreeMap<(String, String, bool), Vec<f64>> =
        Default::default();
    let t2 = Instant::now();
    for (k, (case, labels, gt)) in cases.iter().enumerate() {
        let held_out = k >= n_train;
        let result = stage.extract_case(case, labels)?;
        let dims = case.image.grid.dims();
        let n = dims[0] * dims[1];
        for round in result.rounds.iter() {
            let cam = round.cam.require_channel("cam")?;
            let active: Vec<bool> = (0..dims[2])
                .map(|z| cam[z * n..(z + 1) * n].iter().any(|&v| v > 0.0))
                .collect();
            for t in thresholds {
                let (roi, _) = roi_from_cam(
                    cam,
                    &case.brain_mask.data,
                    &active,
                    dims,
                    Threshold::parse(t)?,
                    1.0 / 3.0,
                );
                table
                    .entry((round.name.to_string(), t.to_string(), held_out))
                    .or_default()
                    .push(dice(&roi, &gt.data));
            }
        }
        let prompts =
            BoxPoints::default().case_prompts(case, &result.final_round().unwrap().roi)?;
        let mut m = MontageInput::new(case);
        m.roi = Some(&result);
        m.prompts = Some(&prompts);
        m.contours.push(Contour {
            name: "ground truth",
            labels: gt,
            colour: [255, 0, 255],
        });
        let drawn = write_montage(&m, &out.join(format!("{}.png", case.id)))?;
        println!(
            "{} ({}): montage slices {drawn:?}",
            case.id,
            if held_out { "held out" } else { "train" }
        );
    }
    println!("extract + montages: {:.1}s", t2.elapsed().as_secs_f64());
    println!("mean ROI Dice vs ground truth (round, threshold, train / held-out):");
    for ((round, t, held), v) in &table {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "  {round:8} t={t:5} {:9} n={} Dice {mean:.3}",
            if *held { "held-out" } else { "train" },
            v.len()
        );
    }
    Ok(())
}
