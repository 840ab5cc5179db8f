//! # clisc report
//!
//! The run report: one self-contained HTML file (tables, an inline SVG
//! Dice-distribution plot per stage, and per-case montage PNGs embedded as
//! data URIs and also saved next to it). [`montage`] draws the montages
//! (slices with label outlines), which `clisc synth` previews use too.
#![warn(unreachable_pub)]

mod error;
pub mod montage;
mod montages;

pub use error::ReportError;

pub use montages::{Montage, LEGEND, MAX_TEST, MAX_TRAINING};

use base64::Engine;
use clisc_pipeline::cases::Cases;
use clisc_pipeline::error::WithContext;
use clisc_pipeline::summary::{mean_std, prompt_placement_fractions, CaseScore, RunSummary};
use clisc_workdir::{Manifest, Step, WorkDir};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Writes `report.html` and its montage PNGs into the report folder of the
/// work folder `work` of a finished (or partial) run, from its summary, its
/// manifest and artefacts, and the prepared `cases` (the images the
/// montages show); returns the HTML's path.
pub fn write_report(
    work: &Path,
    summary: &RunSummary,
    cases: &Cases,
) -> Result<PathBuf, ReportError> {
    let dir = work.join(Step::Report.folder());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let manifest = WorkDir::open(work)
        .with_context(|| format!("opening work folder {}", work.display()))?
        .read_manifest();
    let montages = montages::write_montages(work, cases, &dir);
    let html = render(summary, &manifest, &montages);
    let path = dir.join("report.html");
    clisc_workdir::write_atomic(&path, html.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_mean(values: impl IntoIterator<Item = f64>, digits: usize) -> String {
    match mean_std(values) {
        Some((m, s, n)) => format!("{m:.digits$} ± {s:.digits$} (n={n})"),
        None => "–".into(),
    }
}

/// Renders the HTML page of a summary, with the versions recorded in the
/// run's manifest and the given montage PNGs.
pub fn render(summary: &RunSummary, manifest: &Manifest, montages: &[Montage]) -> String {
    let mut h = String::new();
    h += "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>clisc run report</title><style>\
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}.note{color:#555;font-size:90%}\
img{max-width:100%;border:1px solid #ddd;margin:4px 0;image-rendering:pixelated}\
.legend span{display:inline-block;margin-right:1.2em}\
.legend i{display:inline-block;width:22px;height:4px;margin-right:6px;vertical-align:middle}</style></head><body>";
    let _ = write!(
        h,
        "<h1>clisc run report</h1><p>Pipeline: <code>{}</code></p>",
        esc(&summary.pipeline)
    );
    h += "<p>Stages: ";
    h += &summary
        .stages
        .iter()
        .map(|s| format!("<code>{}</code>", esc(s)))
        .collect::<Vec<_>>()
        .join(", ");
    h += "</p>";
    h += if summary.supervised {
        "<p class=\"note\">Mode: <b>supervised</b> baseline. The network learned the ground-truth labels of the training split (<code>targets = \"ground-truth\"</code>); compare its test Dice with an unsupervised run on the same split.</p>"
    } else if summary.ground_truth_used_for_choices {
        "<p class=\"note\">Mode: <b>ground-truth assisted</b>. Model selection scored the networks' checkpoints against the ground truth of the validation split (see Model selection); elsewhere ground truth is read only to compute the figures below.</p>"
    } else {
        "<p class=\"note\">Mode: <b>unsupervised</b>. Ground truth is read only to compute the figures below.</p>"
    };

    h += &provenance(manifest);
    h += &test_table(summary);
    h += &stages_table(summary);
    h += "<h2>Dice distribution per stage</h2>";
    h += &dice_plot(summary);
    h += &cases_section(montages);
    h += &selection_table(summary);
    h += &details(summary);
    h += "</body></html>\n";
    h
}

/// Test-split Dice and HD95 per model.
fn test_table(summary: &RunSummary) -> String {
    let mut h = String::new();
    h += "<h2>Test split</h2><table><tr><th>model</th><th>Dice</th><th>HD95 (mm)</th><th>cases with undefined HD95</th></tr>";
    for (model, scores) in &summary.test {
        let undefined = scores.iter().filter(|s| s.hd95.is_none()).count();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{undefined}</td></tr>",
            esc(model),
            fmt_mean(scores.iter().map(|s| s.dice), 4),
            fmt_mean(scores.iter().filter_map(|s| s.hd95), 2)
        );
    }
    h + "</table>"
}

/// Per-stage quality on the training split.
fn stages_table(summary: &RunSummary) -> String {
    let mut h = String::new();
    h += "<h2>Stages (training split)</h2><table><tr><th>stage</th><th>measure</th><th>value</th></tr>";
    if let Some(sl) = &summary.slice_labels {
        let _ = write!(
            h,
            "<tr><td>pseudo-labels (kept slices, {:.0}% kept)</td><td>accuracy / precision / recall / F1</td><td>{:.3} / {:.3} / {:.3} / {:.3}</td></tr>",
            sl.kept_fraction * 100.0,
            sl.kept.accuracy,
            sl.kept.precision,
            sl.kept.recall,
            sl.kept.f1
        );
        let _ = write!(
            h,
            "<tr><td>pseudo-labels (all slices)</td><td>accuracy / precision / recall / F1</td><td>{:.3} / {:.3} / {:.3} / {:.3}</td></tr>",
            sl.all.accuracy, sl.all.precision, sl.all.recall, sl.all.f1
        );
    }
    for round in &summary.roi_rounds {
        let scores = &summary.rois[round];
        let extra =
            |key: &'static str| scores.iter().filter_map(move |s| s.extra.get(key).copied());
        let _ = write!(
            h,
            "<tr><td>ROI ({})</td><td>Dice / precision / recall</td><td>{} / {} / {}</td></tr>",
            esc(round),
            fmt_mean(scores.iter().map(|s| s.dice), 4),
            fmt_mean(extra("precision"), 4),
            fmt_mean(extra("recall"), 4)
        );
    }
    if !summary.prompts.is_empty() {
        let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v));
        let [pos, boxes, neg, slices] = prompt_placement_fractions(&summary.prompts);
        let _ = write!(
            h,
            "<tr><td>prompts</td><td>positive points on tumour / boxes containing tumour / negative points on tumour / tumour slices prompted</td><td>{} / {} / {} / {}</td></tr>",
            pct(pos),
            pct(boxes),
            pct(neg),
            pct(slices)
        );
    }
    if !summary.pseudo_masks.is_empty() {
        let _ = write!(
            h,
            "<tr><td>pseudo-masks</td><td>Dice</td><td>{}</td></tr>",
            fmt_mean(summary.pseudo_masks.iter().map(|s| s.dice), 4)
        );
    }
    if !summary.filter.is_empty() {
        for keep in [true, false] {
            let _ = write!(
                h,
                "<tr><td>filter: {} cases</td><td>Dice of network pseudo-label</td><td>{}</td></tr>",
                if keep { "kept" } else { "dropped" },
                fmt_mean(summary.filter.iter().filter(|f| f.keep == keep).filter_map(|f| f.dice_vs_truth), 4)
            );
        }
    }
    h + "</table>"
}

/// How each network chose its checkpoint.
fn selection_table(summary: &RunSummary) -> String {
    if summary.model_selection.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h2>Model selection</h2><table><tr><th>network</th><th style=\"text-align:left\">mode</th><th style=\"text-align:left\">outcome</th></tr>",
    );
    for (step, record) in &summary.model_selection {
        let _ = write!(
            h,
            "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td style=\"text-align:left\">{}</td></tr>",
            esc(step),
            esc(&record.description),
            esc(&summary.selection_outcome(step).unwrap_or_default())
        );
    }
    h + "</table>"
}

/// The numbers the training steps reported themselves, and the timings.
fn details(summary: &RunSummary) -> String {
    let mut h = String::new();
    if !summary.stage_reports.is_empty() {
        h += "<h2>Training details</h2><p class=\"note\">As reported by the plugins.</p><table><tr><th>step</th><th>measure</th><th>value</th></tr>";
        for (step, metrics) in &summary.stage_reports {
            for (name, value) in metrics {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{value:.4}</td></tr>",
                    esc(step),
                    esc(name)
                );
            }
        }
        h += "</table>";
    }
    h += "<h2>Timings</h2><table><tr><th>step</th><th>seconds</th></tr>";
    for step in Step::ALL {
        if let Some(s) = summary.timings.get(step.name()) {
            let _ = write!(h, "<tr><td>{}</td><td>{s:.1}</td></tr>", step.name());
        }
    }
    h + "</table>"
}

/// The clisc version and, per step, the plugins (`slot=name@version`) that
/// produced its artefacts.
fn provenance(manifest: &Manifest) -> String {
    if manifest.steps.is_empty() {
        return String::new();
    }
    let mut h = format!(
        "<h2>Versions</h2><p>clisc {}, seed {}, device <code>{}</code>, pipeline hash <code>{}</code></p>\
<table><tr><th>step</th><th style=\"text-align:left\">plugins</th><th>status</th></tr>",
        esc(&manifest.clisc_version),
        manifest.seed,
        esc(&manifest.device),
        esc(&manifest.config_hash)
    );
    for step in Step::ALL {
        let Some(record) = manifest.steps.get(step.name()) else {
            continue;
        };
        let plugins: Vec<String> = record
            .plugins
            .iter()
            .map(|p| format!("<code>{}</code>", esc(p)))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td>{}</td></tr>",
            step.folder(),
            plugins.join(", "),
            record.status.name()
        );
    }
    h + "</table>"
}

/// The per-case montages with a colour legend, each PNG embedded.
fn cases_section(montages: &[Montage]) -> String {
    if montages.is_empty() {
        return String::new();
    }
    let mut h = String::from("<h2 id=\"cases\">Cases</h2><p class=\"legend\">");
    for (what, [r, g, b]) in LEGEND {
        let _ = write!(
            h,
            "<span><i style=\"background:rgb({r},{g},{b})\"></i>{}</span>",
            esc(what)
        );
    }
    h += "</p><p class=\"note\">Training cases: FLAIR, the activation map of every ROI round (jet colour map over the FLAIR), the final ROI with the prompts, and the contours of the pseudo-label, of the first network's prediction and of the ground truth. Test cases: FLAIR and the contours of the final prediction and of the ground truth. Where contours coincide, the later one in the legend is drawn on top.</p>";
    for m in montages {
        let Ok(bytes) = std::fs::read(&m.png) else {
            continue;
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let _ = write!(
            h,
            "<h3>{}</h3><p class=\"note\">{}</p><img alt=\"montage of {}\" src=\"data:image/png;base64,{b64}\">",
            esc(&m.case),
            esc(&m.caption),
            esc(&m.case)
        );
    }
    h
}

/// Strip plot of per-case Dice for every stage that has scores.
fn dice_plot(summary: &RunSummary) -> String {
    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    for round in &summary.roi_rounds {
        columns.push((
            format!("ROI {round}"),
            summary.rois[round].iter().map(|s| s.dice).collect(),
        ));
    }
    let scores = |v: &[CaseScore]| v.iter().map(|s| s.dice).collect::<Vec<_>>();
    if !summary.pseudo_masks.is_empty() {
        columns.push(("pseudo-masks".into(), scores(&summary.pseudo_masks)));
    }
    if !summary.filter.is_empty() {
        columns.push((
            "filter kept".into(),
            summary
                .filter
                .iter()
                .filter(|f| f.keep)
                .filter_map(|f| f.dice_vs_truth)
                .collect(),
        ));
    }
    for (model, s) in &summary.test {
        columns.push((format!("test {model}"), scores(s)));
    }
    if columns.is_empty() {
        return "<p class=\"note\">No ground truth: nothing to plot.</p>".into();
    }
    let (w, hgt, left, top, bottom) =
        (160.0 * columns.len() as f64 + 60.0, 320.0, 50.0, 20.0, 60.0);
    let plot_h = hgt - top - bottom;
    let y = |d: f64| top + (1.0 - d.clamp(0.0, 1.0)) * plot_h;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" font-size=\"12\">");
    for tick in 0..=5 {
        let d = tick as f64 / 5.0;
        let (yy, right, label_x) = (y(d), w - 10.0, left - 6.0);
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{right}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/><text x=\"{label_x}\" y=\"{:.1}\" text-anchor=\"end\">{d:.1}</text>",
            yy + 4.0,
        );
    }
    let _ = write!(
        s,
        "<text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\">Dice</text>",
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    for (i, (name, values)) in columns.iter().enumerate() {
        let cx = left + 80.0 + 160.0 * i as f64;
        for (j, v) in values.iter().enumerate() {
            let jitter = ((j * 7919) % 41) as f64 - 20.0;
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#3367d6\" fill-opacity=\"0.6\"/>",
                cx + jitter,
                y(*v)
            );
        }
        if let Some((m, _, _)) = mean_std(values.iter().copied()) {
            let (x0, x1, ym) = (cx - 30.0, cx + 30.0, y(m));
            let _ = write!(s, "<line x1=\"{x0:.1}\" x2=\"{x1:.1}\" y1=\"{ym:.1}\" y2=\"{ym:.1}\" stroke=\"#d33\" stroke-width=\"2\"/>");
        }
        let _ = write!(
            s,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            hgt - bottom + 20.0,
            esc(name)
        );
    }
    s += "</svg>";
    s
}

/// Where the report of a work folder is.
pub fn report_path(work_dir: &Path) -> PathBuf {
    work_dir.join(Step::Report.folder()).join("report.html")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_montages_legend_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("train-a.png");
        image::RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]))
            .save(&png)
            .unwrap();
        let montages = [Montage {
            case: "a<b".into(),
            caption: "Training case.".into(),
            png,
        }];
        let mut manifest = Manifest {
            clisc_version: "9.9.9".into(),
            ..Manifest::default()
        };
        manifest.steps.insert(
            "roi".into(),
            clisc_workdir::StepRecord {
                fingerprint: "f".into(),
                status: clisc_workdir::StepStatus::Done,
                plugins: vec!["roi_extractor=cam@0.1.0".into()],
                seconds: 1.0,
                finished_at: String::new(),
            },
        );
        let mut summary = RunSummary::default();
        summary.timings.insert("roi".into(), 2.0);
        summary.timings.insert("evaluation".into(), 1.0);
        let html = render(&summary, &manifest, &montages);
        let timing = |step: &str| html.find(&format!("<td>{step}</td><td>")).unwrap();
        assert!(
            timing("roi") < timing("evaluation"),
            "timings in step order"
        );
        assert!(html.contains("clisc 9.9.9"));
        assert!(html.contains("<code>roi_extractor=cam@0.1.0</code>"));
        assert!(html.contains("<h3>a&lt;b</h3>"));
        assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 1);
        let [r, g, b] = crate::montage::GROUND_TRUTH_COLOUR;
        assert!(html.contains(&format!("background:rgb({r},{g},{b})")));
        let empty = render(&RunSummary::default(), &Manifest::default(), &[]);
        assert!(!empty.contains("id=\"cases\"") && !empty.contains("<h2>Versions</h2>"));
    }
}
