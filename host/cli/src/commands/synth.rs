//! `clisc synth`: writes BraTS-like synthetic cases (BraTS 2020 layout).

use anyhow::{bail, Context};
use clap::Args;
use clisc_synth::SynthOptions;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `clisc synth`.
#[derive(Debug, Args)]
pub(crate) struct SynthArgs {
    /// Output folder (created); cases go to `<out>/BraTS20_Training_NNN/`.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = 4)]
    pub cases: usize,
    /// Volume shape `X,Y,Z` (BraTS: 240,240,155; e.g. 96,96,64 for quick runs).
    #[arg(long, default_value = "240,240,155", value_parser = parse_shape)]
    pub shape: [usize; 3],
    /// Seed: the same seed gives the same cases.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of cases without tumour.
    #[arg(long, default_value_t = 0.0)]
    pub healthy_fraction: f64,
    /// Worker threads per case.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Also write `<out>/previews/<case>.png` (slices of all modalities + labels).
    #[arg(long)]
    pub preview: bool,
}

/// Parses `X,Y,Z` (each at least 8).
pub(crate) fn parse_shape(s: &str) -> Result<[usize; 3], String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>().map_err(|e| format!("`{p}`: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [x, y, z] if *x >= 8 && *y >= 8 && *z >= 8 && *x <= 1024 && *y <= 1024 && *z <= 1024 => {
            Ok([*x, *y, *z])
        }
        _ => Err(format!("shape `{s}`: expected X,Y,Z with each in 8..=1024")),
    }
}

/// Generates and writes the cases, printing one line per case.
pub(crate) fn run(args: SynthArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.healthy_fraction) {
        bail!(
            "--healthy-fraction {} is not in 0..=1",
            args.healthy_fraction
        );
    }
    let opts = SynthOptions {
        shape: args.shape,
        seed: args.seed,
        healthy_fraction: args.healthy_fraction,
        threads: args.threads,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for index in 0..args.cases {
        let t0 = Instant::now();
        let case = clisc_synth::generate(index, &opts);
        let t_gen = t0.elapsed().as_secs_f64();
        let dir = clisc_synth::write_case(&args.out, &case)?;
        if args.preview {
            let p = args.out.join("previews").join(format!("{}.png", case.id));
            std::fs::create_dir_all(p.parent().expect("has parent"))?;
            clisc_synth::preview::write_preview(&case, &p)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        let tumour = case.seg.iter().filter(|&&l| l > 0).count();
        println!(
            "{}  tumour {:>7} voxels  generated in {:.2} s, written in {:.2} s",
            dir.display(),
            tumour,
            t_gen,
            t0.elapsed().as_secs_f64() - t_gen
        );
    }
    Ok(())
}
