//! Helpers shared by the end-to-end tests: tiny BraTS-layout datasets
//! written with the host's NIfTI writer, and locating build outputs.
// Tests that validate pipelines in-process (`Registry::builtin()`) need
// every built-in plugin linked in, as the `clisc` binary has them.
use clisc_builtins as _;
use clisc_sdk::{Grid, LabelVolume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

/// Writes `cases` cases of `shape` in the BraTS 2020 layout (FLAIR and
/// seg only): a noisy brain-shaped ellipsoid with a bright lesion in
/// slices `nz/3 .. nz/3 + nz/4` of every case (varying position).
pub fn write_tiny_dataset(root: &Path, cases: usize, shape: [u32; 3]) {
    let grid = Grid::new(shape, [1.0; 3]);
    let [nx, ny, nz] = grid.dims();
    let mut state = 7u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    for c in 0..cases {
        let id = format!("BraTS20_Training_{:03}", c + 1);
        let dir = root.join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let (mut flair, mut seg) = (vec![0f32; grid.len()], vec![0u8; grid.len()]);
        let lesion_z = nz / 3..nz / 3 + nz / 4;
        let (lx, ly) = (nx / 3 + c % 3 * 2, ny / 3 + c % 2 * 3);
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let (dx, dy, dz) = (
                        (x as f32 - nx as f32 / 2.0) / (nx as f32 * 0.45),
                        (y as f32 - ny as f32 / 2.0) / (ny as f32 * 0.45),
                        (z as f32 - nz as f32 / 2.0) / (nz as f32 * 0.45),
                    );
                    if dx * dx + dy * dy + dz * dz > 1.0 {
                        continue;
                    }
                    let i = grid.index(x, y, z);
                    let lesion =
                        lesion_z.contains(&z) && x.abs_diff(lx) < nx / 6 && y.abs_diff(ly) < ny / 6;
                    flair[i] = 100.0 + 10.0 * noise() + if lesion { 120.0 } else { 0.0 };
                    seg[i] = if lesion { 2 } else { 0 };
                }
            }
        }
        clisc_nifti::write_f32(&dir.join(format!("{id}_flair.nii.gz")), &grid, &flair, None)
            .unwrap();
        let labels = LabelVolume {
            grid,
            data: seg.into(),
        };
        clisc_nifti::write_labels(&dir.join(format!("{id}_seg.nii.gz")), &labels, None).unwrap();
    }
}

/// The folder holding this build's artefacts (`target/<profile>`).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// The example external plugin library, which `cargo build --workspace`
/// (run by `./dev test` before the tests) produces.
pub fn example_plugin_library() -> PathBuf {
    let path = build_dir().join("libclisc_example_threshold_labeler.so");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p clisc-example-threshold-labeler` (./dev test does)",
        path.display()
    );
    path
}

/// Reads `manifest.json` of a work folder.
pub fn manifest(work: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(work.join("manifest.json")).expect("manifest.json"))
        .expect("valid JSON")
}

/// `cli --quiet infer` of one NIfTI volume on the CPU with one thread,
/// panicking with the error output when it fails.
pub fn infer_nifti(cli: &str, model: &Path, input: &Path, out: &Path) {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let args = [
        "--quiet".to_string(),
        "infer".into(),
        "--model".into(),
        path(model),
        "--input".into(),
        path(input),
        "--out".into(),
        path(out),
        "--device".into(),
        "cpu".into(),
        "--threads".into(),
        "1".into(),
    ];
    let result = Command::new(cli)
        .args(&args)
        .output()
        .expect("running clisc");
    assert!(
        result.status.success(),
        "clisc {args:?} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Reads `summary.json` of a work folder.
pub fn summary(work: &Path) -> serde_json::Value {
    read_json(&work.join("summary.json"))
}

/// Starts `cli run --config CONFIG` with info logs going to `log`.
pub fn start_run(cli: &str, config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(cli)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("CLISC_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting clisc run")
}

/// [`start_run`] and waits, panicking with the log when the run fails.
pub fn run_to_end(cli: &str, config: &Path, log: &Path) {
    let status = start_run(cli, config, log).wait().unwrap();
    assert!(
        status.success(),
        "clisc run failed:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Every file under `dir` (relative path -> what `read` makes of it),
/// without descending into folders named in `skip`.
fn walk_files<T>(dir: &Path, skip: &[&str], read: &dyn Fn(&Path) -> T) -> BTreeMap<PathBuf, T> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                if !skip.iter().any(|s| p.file_name().is_some_and(|n| n == *s)) {
                    todo.push(p);
                }
            } else {
                let value = read(&p);
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), value);
            }
        }
    }
    out
}

/// The bytes of every file under `dir`, by relative path.
pub fn file_contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk_files(dir, &[], &|p| std::fs::read(p).unwrap())
}

/// Asserts that folders `a` (not empty) and `b` hold the same files with
/// the same bytes; `what` names the comparison in failures.
pub fn assert_same_files(a: &Path, b: &Path, what: &str) {
    let (a, b) = (file_contents(a), file_contents(b));
    assert!(!a.is_empty(), "{what}: nothing in the reference folder");
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: other files"
    );
    for (p, bytes) in &a {
        assert!(bytes == &b[p], "{what}: {} differs", p.display());
    }
}

/// The modification time of every file under `dir`, by relative path,
/// skipping folders named in `skip`.
pub fn modification_times(dir: &Path, skip: &[&str]) -> BTreeMap<PathBuf, SystemTime> {
    walk_files(dir, skip, &|p| {
        std::fs::metadata(p).unwrap().modified().unwrap()
    })
}

/// A safetensors file as (header, tensor bytes). The header is compared as
/// JSON because its metadata map is written in a per-process hash order.
pub fn safetensors(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

/// Reads a JSON file, panicking with its path when it cannot.
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("valid JSON")
}

/// Runs `tests/support/<script>` with `$CLISC_PYTHON` and `args`, panicking
/// with the script's stderr when it fails. `runs` names the reference code
/// the script runs, for the message when `$CLISC_PYTHON` is not set.
pub fn run_support_script(script: &str, args: &[&str], runs: &str) {
    let python = clisc_test_harness::python(&format!("this test runs {runs}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("support")
        .join(script);
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(args)
        .output()
        .expect("cannot run $CLISC_PYTHON");
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The whole pipeline (both networks, the filter, evaluation) over a tiny
/// dataset in `data` (see [`write_tiny_dataset`]), with settings small
/// enough for a few seconds per run on one CPU thread, work folder `work`;
/// the 3D U-Net trains `iterations` steps with a checkpoint every
/// `checkpoint_every`.
pub fn tiny_pipeline_toml(work: &str, iterations: u32, checkpoint_every: u32) -> String {
    format!(
        r#"
[run]
output = "{work}"
device = "cpu"
seed = 5
threads = 1

[dataset]
root = "data"
modalities = ["flair"]
split = {{ ratios = [4.0, 1.0, 2.0], seed = 3 }}

[stages.pseudo_labeler]
plugin = "flair-intensity"

[stages.roi_extractor]
plugin = "cam"
settings = {{ arch = "resnet18", input_size = 32, epochs = 1, batch_size = 16, cam_batch_size = 32, amda_rounds = 1 }}

[stages.prompt_generator]
plugin = "box-points"
settings = {{ box_dilation = 2 }}

[stages.promptable_segmenter]
plugin = "classic-prompt"

[stages.volumetric_segmenter]
plugin = "unet3d"
settings = {{ features = [4, 8], patch_size = [16, 16, 16], batch_size = 2, iterations = {iterations}, checkpoint_every = {checkpoint_every}, dropout = 0.3, window_batch = 8 }}

[stages.reprompt_generator]
plugin = "box-points"
settings = {{ box_dilation = 0 }}

[stages.filter]
plugin = "s3f"
settings = {{ keep_fraction = 0.8 }}
"#
    )
}

/// [`tiny_pipeline_toml`] (60 training steps, a checkpoint every 4) written
/// to `dir/<work>.toml`, with its work folder `dir/<work>`. Returns the file.
pub fn write_tiny_pipeline(dir: &Path, work: &str) -> PathBuf {
    let path = dir.join(format!("{work}.toml"));
    std::fs::write(&path, tiny_pipeline_toml(work, 60, 4)).unwrap();
    path
}
