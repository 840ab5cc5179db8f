//! The run report, opened in a real headless browser: a tiny end-to-end
//! run on synthetic data writes `10-report/report.html`, Chromium renders
//! it to a screenshot, and the screenshot must show the page with the
//! montages in it (their contour colours and dark tile background), not
//! just contain the right strings.
//!
//! Needs Debian's `chromium` (scripts/ci-deps.sh installs it); without it
//! the test fails and says so.

use clisc::commands::run::run_pipeline;
use clisc_pipeline::RunOptions;
use clisc_report::montage::{BACKGROUND, GROUND_TRUTH_COLOUR, PREDICTION_COLOUR, ROI_COLOUR};
use clisc_synth::{generate, write_case, SynthOptions};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WINDOW: (u32, u32) = (1200, 3000);

/// The whole pipeline with settings small enough for seconds on one thread
/// (the classifier is too weak to gate its CAMs; without gating the ROIs,
/// prompts and pseudo-labels are not empty, so the montages show them).
fn write_pipeline(dir: &Path) -> PathBuf {
    let text = r#"
[run]
output = "work"
device = "cpu"
seed = 5
threads = 1

[dataset]
root = "data"
modalities = ["flair"]
split = { ratios = [4.0, 1.0, 2.0], seed = 3 }

[stages.pseudo_labeler]
plugin = "flair-intensity"

[stages.roi_extractor]
plugin = "cam"
settings = { arch = "resnet18", input_size = 48, epochs = 2, batch_size = 16, cam_batch_size = 32, amda_rounds = 1, gate_classifier = false, threshold = "otsu" }

[stages.prompt_generator]
plugin = "box-points"
settings = { box_dilation = 2 }

[stages.promptable_segmenter]
plugin = "classic-prompt"

[stages.volumetric_segmenter]
plugin = "unet3d"
settings = { features = [4, 8], patch_size = [16, 16, 16], batch_size = 2, iterations = 40, window_batch = 8 }

[stages.reprompt_generator]
plugin = "box-points"
settings = { box_dilation = 0 }

[stages.filter]
plugin = "s3f"
settings = { keep_fraction = 0.8 }
"#;
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn write_synthetic_cases(root: &Path, cases: usize) {
    let opts = SynthOptions {
        shape: [64, 64, 40],
        seed: 7,
        ..SynthOptions::default()
    };
    for i in 0..cases {
        write_case(root, &generate(i, &opts)).unwrap();
    }
}

/// The Chromium executable, or a failure telling how to install it.
fn chromium() -> PathBuf {
    let candidates = ["chromium", "chromium-browser"];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in candidates {
            let exe = dir.join(name);
            if exe.is_file() {
                return exe;
            }
        }
    }
    panic!(
        "no `chromium` on PATH: this test opens the report in a headless browser; \
         install it with `sudo scripts/ci-deps.sh` (Debian package `chromium`)"
    );
}

/// Screenshots `html` at the window size with a fresh profile; gives up
/// after a minute.
fn screenshot(browser: &Path, html: &Path, out: &Path, profile: &Path) -> image::RgbImage {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--force-device-scale-factor=1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .arg(format!("file://{}", html.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chromium");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chromium did not finish the screenshot within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}):\n{stderr}");
    assert!(out.exists(), "chromium wrote no screenshot:\n{stderr}");
    image::open(out)
        .expect("the screenshot decodes as PNG")
        .to_rgb8()
}

/// Pixels within 2 levels per channel of `colour`.
fn count(img: &image::RgbImage, colour: [u8; 3]) -> usize {
    img.pixels()
        .filter(|p| (0..3).all(|k| p.0[k].abs_diff(colour[k]) <= 2))
        .count()
}

/// Keeps the test folder (run, report, screenshot) when the test fails.
struct KeepOnFailure(Option<tempfile::TempDir>);

impl Drop for KeepOnFailure {
    fn drop(&mut self) {
        if let (true, Some(dir)) = (std::thread::panicking(), self.0.take()) {
            eprintln!("kept the report and screenshot in {}", dir.keep().display());
        }
    }
}

#[test]
fn report_renders_in_a_headless_browser_with_montages() {
    let browser = chromium(); // fail before the run when it is missing
    let guard = KeepOnFailure(Some(tempfile::tempdir().unwrap()));
    let dir = guard.0.as_ref().unwrap();
    write_synthetic_cases(&dir.path().join("data"), 7);
    let config = write_pipeline(dir.path());
    run_pipeline(&config, RunOptions::default(), true).expect("the tiny pipeline runs");

    let report_dir = dir.path().join("work/10-report");
    let html_path = report_dir.join("report.html");
    let html = std::fs::read_to_string(&html_path).expect("report.html written");
    let pngs: Vec<String> = std::fs::read_dir(&report_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".png"))
        .collect();
    assert!(pngs.iter().any(|n| n.starts_with("train-")), "{pngs:?}");
    assert!(pngs.iter().any(|n| n.starts_with("test-")), "{pngs:?}");
    assert_eq!(
        html.matches("src=\"data:image/png;base64,").count(),
        pngs.len(),
        "every montage PNG is embedded"
    );

    let started = Instant::now();
    let shot = screenshot(
        &browser,
        &html_path,
        &dir.path().join("screenshot.png"),
        &dir.path().join("chromium-profile"),
    );
    eprintln!(
        "{} screenshot in {:.1} s",
        browser.display(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(shot.dimensions(), WINDOW, "screenshot has the window size");
    let colours: HashSet<[u8; 3]> = shot.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() > 500,
        "the page looks blank: {} distinct colours",
        colours.len()
    );
    // Legend swatches are 22 x 4 px; montage contours and tiles are far more.
    let counts = [
        ("montage background", count(&shot, BACKGROUND)),
        ("ground truth", count(&shot, GROUND_TRUTH_COLOUR)),
        ("final ROI", count(&shot, ROI_COLOUR)),
        ("prediction", count(&shot, PREDICTION_COLOUR)),
    ];
    eprintln!("pixels per colour: {counts:?}");
    assert!(counts[0].1 > 5_000, "no montage tiles visible: {counts:?}");
    for (name, n) in &counts[1..] {
        assert!(*n > 200, "{name} contours not visible: {counts:?}");
    }
}
