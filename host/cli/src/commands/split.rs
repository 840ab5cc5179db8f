//! `clisc split`: writes a reproducible train/valid/test split of a
//! dataset as `case_id,split` CSV.

use anyhow::Context;
use clap::Args;
use clisc_dataset::splits::{self, Split};
use clisc_dataset::{Dataset, DatasetLayout, LayoutKind};
use std::path::PathBuf;

/// Arguments of `clisc split`.
#[derive(Debug, Args)]
pub(crate) struct SplitArgs {
    /// Dataset root (BraTS 2020 / 2021 layout).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Output CSV.
    #[arg(long)]
    pub out: PathBuf,
    /// `brats2020` or `brats2021`.
    #[arg(long, default_value = "brats2020")]
    pub layout: String,
    /// Train:valid:test ratios.
    #[arg(long, default_value = "7,1,2")]
    pub ratios: String,
    /// Shuffle seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Opens the dataset (FLAIR required), splits it, writes the CSV.
pub(crate) fn run(args: SplitArgs) -> anyhow::Result<()> {
    let layout = match args.layout.as_str() {
        "brats2020" => LayoutKind::Brats2020,
        "brats2021" => LayoutKind::Brats2021,
        other => anyhow::bail!(
            "--layout `{other}`: expected brats2020 or brats2021 (use a pipeline file for folders)"
        ),
    };
    let ratios: Vec<f64> = args
        .ratios
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--ratios `{}`", args.ratios))?;
    let ratios: [f64; 3] = ratios
        .try_into()
        .map_err(|_| anyhow::anyhow!("--ratios needs three numbers"))?;
    let layout = DatasetLayout {
        layout,
        modalities: Some(vec!["flair".into()]),
        ..Default::default()
    };
    let ds = Dataset::open(&args.dataset, &layout)?;
    let s = splits::generate(&ds.ids(), ratios, args.seed)?;
    splits::write_csv(&args.out, &s)?;
    let count = |x: Split| s.values().filter(|&&v| v == x).count();
    println!(
        "{}: {} train, {} valid, {} test",
        args.out.display(),
        count(Split::Train),
        count(Split::Valid),
        count(Split::Test)
    );
    Ok(())
}
