//! `clisc dicom ...`: list DICOM studies and series, convert them to NIfTI.

use crate::dicom::{self, convert::ConvertOptions, select::describe_all, ModalityRules};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// DICOM subcommands.
#[derive(Debug, Subcommand)]
pub enum DicomCommand {
    /// List the studies and series under a folder, with their geometry.
    Ls(LsArgs),
    /// Convert the series under a folder to NIfTI (same voxels and affine as dcm2niix).
    Convert(ConvertArgs),
}

/// Arguments of `clisc dicom ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Folder searched recursively (any file names, mixed studies and series).
    pub dir: PathBuf,
    /// Also list the files that were skipped, and why.
    #[arg(long)]
    pub skipped: bool,
    /// Show which series these modality rules (TOML) select; `brain` = the
    /// built-in flair/t1/t1ce/t2 rules.
    #[arg(long)]
    pub rules: Option<String>,
}

/// Arguments of `clisc dicom convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Folder searched recursively.
    pub dir: PathBuf,
    /// Output folder for the NIfTI files.
    pub out: PathBuf,
    /// Write `.nii` instead of `.nii.gz`.
    #[arg(long)]
    pub uncompressed: bool,
    /// Convert only the series selected by these modality rules (TOML file,
    /// or `brain` for the built-in flair/t1/t1ce/t2 rules), written as
    /// `<modality>.nii.gz`.
    #[arg(long)]
    pub rules: Option<String>,
}

fn load_rules(spec: &str) -> anyhow::Result<ModalityRules> {
    if spec == "brain" {
        return Ok(ModalityRules::brain_mri());
    }
    Ok(ModalityRules::from_file(std::path::Path::new(spec))?)
}

/// Runs a DICOM subcommand.
pub fn run(cmd: DicomCommand) -> anyhow::Result<()> {
    match cmd {
        DicomCommand::Ls(args) => ls(args),
        DicomCommand::Convert(args) => convert(args),
    }
}

fn fmt3(v: [f64; 3]) -> String {
    format!("{:.3} {:.3} {:.3}", v[0], v[1], v[2])
}

fn ls(args: LsArgs) -> anyhow::Result<()> {
    let report =
        dicom::scan_dir(&args.dir).with_context(|| format!("scanning {}", args.dir.display()))?;
    let mut last_study = None;
    for s in &report.series {
        if last_study.as_ref() != Some(&s.study.study_uid) {
            println!(
                "study {} patient '{}' id {} date {} '{}'",
                s.study.study_uid,
                s.study.patient_name,
                s.study.patient_id,
                s.study.study_date,
                s.study.study_description
            );
            last_study = Some(s.study.study_uid.clone());
        }
        let first = &s.slices[0];
        println!(
            "  {} {} ({} files, {})",
            s.label(),
            s.modality,
            s.slices
                .iter()
                .map(|x| &x.path)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            crate::dicom::pixels::transfer_syntax_name(&first.transfer_syntax)
        );
        println!("    uid {}", s.series_uid);
        if s.localizer {
            println!("    localizer ({} image(s)): not converted", s.slices.len());
            continue;
        }
        match &s.geometry {
            Ok(g) => {
                let a = g.grid.affine;
                println!(
                    "    {}x{}x{} voxels, spacing {} mm, orientation {}",
                    g.grid.shape[0],
                    g.grid.shape[1],
                    g.grid.shape[2],
                    fmt3(g.grid.spacing),
                    crate::dicom::geometry::orientation_code(&g.grid)
                );
                println!("    origin (RAS) {}", fmt3([a[0][3], a[1][3], a[2][3]]));
                for w in &g.warnings {
                    println!("    warning: {w}");
                }
            }
            Err(e) => println!("    not a volume: {e}"),
        }
    }
    if report.series.is_empty() {
        println!("no DICOM image series under {}", args.dir.display());
    }
    if !report.skipped.is_empty() {
        println!("{} file(s) skipped", report.skipped.len());
        if args.skipped {
            for f in &report.skipped {
                println!("  {}: {}", f.path.display(), f.reason);
            }
        }
    }
    if let Some(spec) = &args.rules {
        let rules = load_rules(spec)?;
        match rules.select(&report.series) {
            Ok(chosen) => {
                for (m, s) in chosen {
                    println!("{m} = {}", s.label());
                }
            }
            Err(e) => bail!("{e}"),
        }
    }
    Ok(())
}

fn convert(args: ConvertArgs) -> anyhow::Result<()> {
    let rules = args.rules.as_deref().map(load_rules).transpose()?;
    let options = ConvertOptions {
        uncompressed: args.uncompressed,
        rules,
    };
    let summary = dicom::convert_dir(&args.dir, &args.out, &options)
        .with_context(|| format!("converting {}", args.dir.display()))?;
    for c in &summary.converted {
        println!("{} -> {}", c.series, c.path.display());
        for w in &c.warnings {
            println!("  warning: {w}");
        }
    }
    if !summary.report.skipped.is_empty() {
        println!(
            "{} file(s) skipped (see `clisc dicom ls --skipped`)",
            summary.report.skipped.len()
        );
    }
    if !summary.failed.is_empty() {
        let lines: Vec<String> = summary
            .failed
            .iter()
            .map(|(s, e)| format!("  {s}: {e}"))
            .collect();
        bail!(
            "{} series could not be converted:\n{}",
            summary.failed.len(),
            lines.join("\n")
        );
    }
    if summary.converted.is_empty() {
        bail!(
            "no volume to convert under {}.\nSeries found:\n{}",
            args.dir.display(),
            describe_all(&summary.report.series)
        );
    }
    Ok(())
}
