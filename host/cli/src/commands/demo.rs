//! `clisc demo`: from nothing to a report. Synthesises a small BraTS-like
//! dataset, runs the weight-free pipeline (`configs/demo.toml`) on it,
//! evaluates the test split and writes the HTML report.

use anyhow::Context;
use clap::Args;
use clisc_pipeline::summary::mean_std;
use clisc_pipeline::RunOptions;
use clisc_synth::{generate, write_case, SynthOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The demo pipeline, shipped inside the binary.
pub(crate) const DEMO_PIPELINE: &str = include_str!("../../../../configs/demo.toml");

/// Arguments of `clisc demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Folder for the data, the pipeline copy, the work folder and the report.
    #[arg(long, default_value = "demo")]
    pub dir: PathBuf,
    /// Number of synthetic cases.
    #[arg(long, default_value_t = 40)]
    pub cases: usize,
    /// Volume shape x,y,z of the synthetic cases.
    #[arg(long, default_value = "96,96,64", value_parser = crate::commands::synth::parse_shape)]
    pub shape: [usize; 3],
    /// Seed of the data and of the run.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Runs the demo; prints where the report is and the test Dice.
pub(crate) fn run(args: DemoArgs, quiet: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let data = args.dir.join("data");
    synthesise(&data, &args)?;
    let config = args.dir.join("demo.toml");
    let text = DEMO_PIPELINE
        .replace("output = \"../work/demo\"", "output = \"work\"")
        .replace("root = \"../data/demo\"", "root = \"data\"")
        .replace("seed = 7", &format!("seed = {}", args.seed));
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    let summary = crate::commands::run::run_pipeline(&config, RunOptions::default(), quiet)?;
    let report = clisc_report::report_path(&args.dir.join("work"));
    println!("report: {}", report.display());
    for line in summary.digest() {
        println!("{line}");
    }
    for (model, scores) in &summary.test {
        if let Some((m, s, n)) = mean_std(scores.iter().map(|s| s.dice)) {
            println!("test whole-tumor Dice ({model}): {m:.4} ± {s:.4} over {n} cases");
        }
    }
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes the synthetic cases that are not there yet (idempotent).
fn synthesise(data: &Path, args: &DemoArgs) -> anyhow::Result<()> {
    let opts = SynthOptions {
        shape: args.shape,
        seed: args.seed,
        ..SynthOptions::default()
    };
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    for i in 0..args.cases {
        let id = clisc_synth::case_id(i);
        if data.join(&id).join(format!("{id}_seg.nii.gz")).exists() {
            continue;
        }
        let case = generate(i, &opts);
        write_case(data, &case).with_context(|| format!("writing synthetic case {id}"))?;
    }
    Ok(())
}
