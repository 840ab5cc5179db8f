//! `keep_largest_components` on `[stages.promptable_segmenter]`: the host
//! keeps only the largest 3D components of each stacked pseudo-label (issue
//! #6: "optionally keeping the largest components").
//!
//! One pipeline up to the pseudo-masks runs on synthetic BraTS-like cases
//! without the option, then again in the same work folder with
//! `keep_largest_components = 1`: the earlier steps are reused, the
//! pseudo-masks step reruns, and every new mask (cropped and original grid)
//! is exactly the largest 26-connected component of the old one.

use clisc::commands::run::run_pipeline;
use clisc_imaging::components::{label_3d, largest_component};
use clisc_imaging::Connectivity;
use clisc_pipeline::RunOptions;
use clisc_synth::SynthOptions;
use std::path::{Path, PathBuf};

fn write_pipeline(dir: &Path, keep: &str) -> PathBuf {
    let text = format!(
        r#"
[run]
output = "work"
device = "cpu"
seed = 3
threads = 1

[dataset]
root = "data"
modalities = ["flair"]
split = {{ ratios = [5.0, 0.0, 1.0], seed = 1 }}

[stages.pseudo_labeler]
plugin = "flair-intensity"

[stages.roi_extractor]
plugin = "cam"
settings = {{ arch = "resnet18", input_size = 64, epochs = 3, batch_size = 16, amda_rounds = 0 }}

[stages.prompt_generator]
plugin = "box-points"
settings = {{ box_dilation = 3 }}

[stages.promptable_segmenter]
plugin = "classic-prompt"
{keep}
"#
    );
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One case's pseudo-mask: id, cropped labels, their dims, original-grid labels.
type CaseMask = (String, Vec<u8>, [usize; 3], Vec<u8>);

/// Pseudo-masks of the run, by case id.
fn masks(work: &Path) -> Vec<CaseMask> {
    let dir = work.join("04-pseudo-masks");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(id) = name.strip_suffix(".nii.gz") else {
            continue;
        };
        let (cropped, _) = clisc_nifti::read_labels(&path).unwrap();
        let (original, _) = clisc_nifti::read_labels(&dir.join("original").join(&name)).unwrap();
        out.push((
            id.to_string(),
            cropped.data.to_vec(),
            cropped.grid.dims(),
            original.data.to_vec(),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn pseudo_masks_keep_only_the_largest_component_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        shape: [64, 64, 40],
        seed: 11,
        threads: 1,
        ..Default::default()
    };
    for i in 0..6 {
        clisc_synth::write_case(&dir.path().join("data"), &clisc_synth::generate(i, &opts))
            .unwrap();
    }
    let config = write_pipeline(dir.path(), "");
    run_pipeline(&config, RunOptions::default(), true).unwrap_or_else(|e| panic!("{e:#}"));
    let all = masks(&dir.path().join("work"));
    assert_eq!(all.len(), 5, "5 training cases");
    let islands: usize = all
        .iter()
        .map(|(_, m, dims, _)| label_3d(m, *dims, Connectivity::Full).sizes.len())
        .filter(|&n| n > 1)
        .count();
    assert!(
        islands > 0,
        "no case has more than one component: the option would not be exercised"
    );

    let fingerprints = || -> serde_json::Value {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("work/manifest.json")).unwrap())
                .unwrap();
        m["steps"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["fingerprint"].clone()))
            .collect()
    };
    let prompts_file = dir
        .path()
        .join("work/03-prompts")
        .join(format!("{}.json", all[0].0));
    let modified = || {
        std::fs::metadata(&prompts_file)
            .unwrap()
            .modified()
            .unwrap()
    };
    let (before_fp, before_time) = (fingerprints(), modified());

    let config = write_pipeline(dir.path(), "keep_largest_components = 1");
    let summary =
        run_pipeline(&config, RunOptions::default(), true).unwrap_or_else(|e| panic!("{e:#}"));
    let after_fp = fingerprints();
    assert_eq!(after_fp["prompts"], before_fp["prompts"]);
    assert_eq!(
        modified(),
        before_time,
        "the prompts were reused, not rewritten"
    );
    assert_ne!(after_fp["pseudo-masks"], before_fp["pseudo-masks"]);
    let kept = masks(&dir.path().join("work"));
    assert_eq!(kept.len(), all.len());
    let mut changed = 0;
    for ((id, before, dims, before_orig), (id2, after, _, after_orig)) in all.iter().zip(&kept) {
        assert_eq!(id, id2);
        assert_eq!(
            *after,
            largest_component(before, *dims, Connectivity::Full),
            "case {id}"
        );
        assert!(
            label_3d(after, *dims, Connectivity::Full).sizes.len() <= 1,
            "case {id}"
        );
        // The original-grid copy is the same labels, put back.
        let n = |v: &[u8]| v.iter().filter(|&&x| x != 0).count();
        assert_eq!(n(after_orig), n(after), "case {id}");
        assert!(
            after_orig
                .iter()
                .zip(before_orig)
                .all(|(a, b)| *a == 0 || *b != 0),
            "case {id}: kept voxels were labelled before"
        );
        changed += usize::from(after != before);
    }
    assert_eq!(changed, islands);
    assert_eq!(summary.pseudo_masks.len(), 5);
}
