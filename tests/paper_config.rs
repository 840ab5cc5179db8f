//! `configs/clisc-paper.toml` without its weight files: `clisc run` and
//! `clisc check` stop before doing anything, with one error that names
//! every missing weight file (setting, file:line, path, download URL).
//! The shipped variants (`medsam.toml`, `biomedclip.toml`) differ from it
//! only in the stage they swap, and name their own files.

use clisc_tests::write_tiny_dataset;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

/// (setting value in the config, official URL the error must give).
const WEIGHTS: [(&str, &str); 3] = [
    (
        "../weights/ViT-B-32.pt",
        "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    ),
    (
        "../weights/resnet50-11ad3fa6.pth",
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    ),
    (
        "../weights/sam_vit_b_01ec64.pth",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    ),
];

fn paper_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/clisc-paper.toml");
    std::fs::read_to_string(&path).expect("configs/clisc-paper.toml")
}

/// Every file and folder under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
            if p.is_dir() {
                walk(&p, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn clisc(args: &[&str], cwd: &Path) -> Output {
    Command::new(CLI)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running clisc")
}

/// Checks that `stderr` reports each weight file once, with its setting,
/// the file:line of its value, the resolved path and the URL.
fn assert_names_every_weight_file(stderr: &str, config_text: &str, root: &Path) {
    assert!(
        stderr.contains("3 weight files are missing"),
        "no summary line:\n{stderr}"
    );
    for (value, url) in WEIGHTS {
        let line = config_text
            .lines()
            .position(|l| l.contains(value))
            .expect("value in the config")
            + 1;
        let file = Path::new(value).file_name().unwrap().to_str().unwrap();
        let resolved = root.join("weights").join(file);
        let entry = stderr
            .split("\n/")
            .find(|e| e.contains(&format!("{}:{line}:", "clisc-paper.toml")) && e.contains(file))
            .unwrap_or_else(|| panic!("no entry for {file} at line {line}:\n{stderr}"));
        assert!(
            entry.contains(&resolved.display().to_string()),
            "{file}: resolved path {} not named:\n{entry}",
            resolved.display()
        );
        assert!(entry.contains(url), "{file}: URL {url} not given:\n{entry}");
        assert!(
            entry.contains("settings.weights") || entry.contains("settings.pretrained"),
            "{file}: setting not named:\n{entry}"
        );
        assert_eq!(
            stderr.matches(url).count(),
            1,
            "{file} reported more than once:\n{stderr}"
        );
    }
}

#[test]
fn paper_config_without_weights_fails_before_any_work_naming_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let text = paper_config();
    std::fs::create_dir_all(root.join("configs")).unwrap();
    let config = root.join("configs/clisc-paper.toml");
    std::fs::write(&config, &text).unwrap();
    let config_arg = config.to_str().unwrap();

    // No dataset either: the weight files are all listed, then the dataset.
    let before = tree(&root);
    let out = clisc(&["run", "--config", config_arg], &root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "clisc run succeeded:\n{stderr}");
    assert_names_every_weight_file(&stderr, &text, &root);
    let data = root.join("data/MICCAI_BraTS2020_TrainingData");
    let weights_at = stderr.find("weight files are missing").unwrap();
    let dataset_at = stderr
        .find(&format!("dataset folder {} does not exist", data.display()))
        .unwrap_or_else(|| panic!("missing dataset not reported:\n{stderr}"));
    assert!(weights_at < dataset_at, "weights first:\n{stderr}");
    assert_eq!(tree(&root), before, "clisc run wrote something");

    // With a dataset: the same weight files, nothing written, and
    // `clisc check` reports the same.
    write_tiny_dataset(&data, 2, [24, 24, 16]);
    let before = tree(&root);
    let out = clisc(&["run", "--config", config_arg], &root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "clisc run succeeded:\n{stderr}");
    assert_names_every_weight_file(&stderr, &text, &root);
    assert!(!stderr.contains("dataset folder"), "{stderr}");
    assert!(!root.join("work").exists(), "a work folder was created");
    assert_eq!(tree(&root), before, "clisc run wrote something");

    let out = clisc(&["check", config_arg], &root);
    let check_err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "clisc check succeeded:\n{check_err}");
    assert_names_every_weight_file(&check_err, &text, &root);
    assert!(out.stdout.is_empty(), "check printed a pipeline");

    // Once the files are there, the configuration is valid as written.
    std::fs::create_dir_all(root.join("weights")).unwrap();
    for (value, _) in WEIGHTS {
        let file = Path::new(value).file_name().unwrap();
        std::fs::write(root.join("weights").join(file), b"placeholder").unwrap();
    }
    let out = clisc(&["check", config_arg], &root);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved = String::from_utf8_lossy(&out.stdout);
    assert!(resolved.contains("plugin = \"sam\""), "{resolved}");
    assert!(resolved.contains("target_layer = \"layer3\""), "{resolved}");
    // `[run] device = "auto"` is resolved to what this machine has.
    let device = clisc_registry::device::resolve("[run] device", "auto").unwrap();
    assert!(device == "cpu" || device == "cuda:0", "{device}");
    let device_line = format!("# a run on this machine would use device {device}");
    assert!(resolved.contains(&device_line), "{resolved}");
}

/// A shipped config's text, and its setting lines (not comments or blank
/// lines) that differ from the paper config's, which it must otherwise
/// equal line for line.
fn lines_differing_from_paper(name: &str) -> (String, Vec<String>) {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let text = std::fs::read_to_string(configs.join(name)).unwrap();
    let settings = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(String::from)
            .collect()
    };
    let (paper, ours) = (settings(&paper_config()), settings(&text));
    assert_eq!(paper.len(), ours.len(), "{name}");
    let differing = paper
        .into_iter()
        .zip(ours)
        .filter(|(a, b)| a != b)
        .map(|(_, b)| b)
        .collect();
    (text, differing)
}

#[test]
fn medsam_config_differs_only_in_its_segmenter_and_names_its_checkpoint() {
    // Every setting line equals the paper's except the output folder and
    // the promptable segmenter's settings.
    let (medsam, differing) = lines_differing_from_paper("medsam.toml");
    assert_eq!(differing.len(), 2, "{differing:?}");
    assert!(differing[0].starts_with("output = "), "{differing:?}");
    assert!(
        differing[1].contains("preprocess = \"medsam\""),
        "{differing:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("configs")).unwrap();
    std::fs::write(root.join("configs/medsam.toml"), &medsam).unwrap();
    let out = clisc(&["check", "configs/medsam.toml"], &root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("3 weight files are missing"), "{stderr}");
    let entry = stderr
        .split("\n/")
        .find(|e| e.contains("medsam_vit_b.pth"))
        .unwrap_or_else(|| panic!("medsam_vit_b.pth not named:\n{stderr}"));
    assert!(
        entry.contains("https://github.com/bowang-lab/MedSAM"),
        "{entry}"
    );
}

#[test]
fn biomedclip_config_differs_only_in_its_labeler_and_names_its_files() {
    // Every setting line equals the paper's except the output folder and
    // the pseudo-labeler's plugin and settings.
    let (text, differing) = lines_differing_from_paper("biomedclip.toml");
    assert_eq!(differing.len(), 3, "{differing:?}");
    assert!(differing[0].starts_with("output = "), "{differing:?}");
    assert_eq!(differing[1], "plugin = \"biomedclip\"");
    assert!(
        differing[2].contains("open_clip_pytorch_model.bin") && differing[2].contains("vocab.txt"),
        "{differing:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("configs")).unwrap();
    std::fs::write(root.join("configs/biomedclip.toml"), &text).unwrap();
    write_tiny_dataset(
        &root.join("data/MICCAI_BraTS2020_TrainingData"),
        2,
        [24, 24, 16],
    );
    let out = clisc(&["check", "configs/biomedclip.toml"], &root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("4 weight files are missing"), "{stderr}");
    let folder = "weights/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224";
    for (file, setting) in [
        ("open_clip_pytorch_model.bin", "settings.weights"),
        ("vocab.txt", "settings.vocab"),
    ] {
        // One entry per missing file, each starting with the config's file:line:col.
        let entry = stderr
            .split("\nconfigs/biomedclip.toml:")
            .find(|e| e.contains(&format!("{folder}/{file} does not exist")))
            .unwrap_or_else(|| panic!("{file} not named:\n{stderr}"));
        assert!(
            entry.contains(&format!("[stages.pseudo_labeler] {setting}")),
            "{entry}"
        );
        assert!(
            entry.contains(
                "https://huggingface.co/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
            ),
            "{entry}"
        );
    }

    // With the four files in place the configuration is valid as written.
    std::fs::create_dir_all(root.join(folder)).unwrap();
    for file in [
        "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224/open_clip_pytorch_model.bin",
        "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224/vocab.txt",
        "resnet50-11ad3fa6.pth",
        "sam_vit_b_01ec64.pth",
    ] {
        std::fs::write(root.join("weights").join(file), b"placeholder").unwrap();
    }
    let out = clisc(&["check", "configs/biomedclip.toml"], &root);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved = String::from_utf8_lossy(&out.stdout);
    assert!(resolved.contains("plugin = \"biomedclip\""), "{resolved}");
}

#[test]
fn sam2_propagation_config_differs_only_in_its_segmenter_and_names_its_checkpoint() {
    // Every setting line equals the paper's except the output folder and
    // the promptable segmenter's plugin and settings.
    let (text, differing) = lines_differing_from_paper("sam2-propagation.toml");
    assert_eq!(differing.len(), 3, "{differing:?}");
    assert!(differing[0].starts_with("output = "), "{differing:?}");
    assert_eq!(differing[1], "plugin = \"sam2\"");
    assert!(
        differing[2].contains("sam2.1_hiera_tiny.pt") && differing[2].contains("propagate = true"),
        "{differing:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("configs")).unwrap();
    std::fs::write(root.join("configs/sam2-propagation.toml"), &text).unwrap();
    write_tiny_dataset(
        &root.join("data/MICCAI_BraTS2020_TrainingData"),
        2,
        [24, 24, 16],
    );
    let out = clisc(&["check", "configs/sam2-propagation.toml"], &root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("3 weight files are missing"), "{stderr}");
    let entry = stderr
        .split("\nconfigs/sam2-propagation.toml:")
        .find(|e| e.contains("sam2.1_hiera_tiny.pt does not exist"))
        .unwrap_or_else(|| panic!("sam2.1_hiera_tiny.pt not named:\n{stderr}"));
    assert!(
        entry.contains("[stages.promptable_segmenter] settings.weights"),
        "{entry}"
    );
    assert!(
        entry.contains(
            "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
        ),
        "{entry}"
    );

    // With the three files in place the configuration is valid as written.
    std::fs::create_dir_all(root.join("weights")).unwrap();
    for file in [
        "ViT-B-32.pt",
        "resnet50-11ad3fa6.pth",
        "sam2.1_hiera_tiny.pt",
    ] {
        std::fs::write(root.join("weights").join(file), b"placeholder").unwrap();
    }
    let out = clisc(&["check", "configs/sam2-propagation.toml"], &root);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved = String::from_utf8_lossy(&out.stdout);
    assert!(resolved.contains("plugin = \"sam2\""), "{resolved}");
}
