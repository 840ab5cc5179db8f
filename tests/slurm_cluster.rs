//! `clisc slurm submit` against a real Slurm: a one-node cluster on this
//! machine (`scripts/slurm-local.sh`: munged, slurmctld and slurmd on the
//! loopback interface). The whole pipeline runs as job arrays and single
//! jobs; an array task that cannot write its case fails, the merge names
//! the missing case, and submitting again runs only that shard and the
//! steps after it. The results equal those of a local `clisc run`.
//!
//! Needs root and Debian's `slurm-wlm` and `munge` (scripts/ci-deps.sh
//! installs them); without them the test fails and says why.

use clisc_tests::{
    manifest, modification_times, safetensors, summary, tiny_pipeline_toml, write_tiny_dataset,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

/// The shared tiny pipeline (30 training steps, a checkpoint every 10)
/// with `slurm` appended.
fn write_pipeline(dir: &Path, work: &str, slurm: &str) -> PathBuf {
    let text = format!("{}{slurm}", tiny_pipeline_toml(work, 30, 10));
    let path = dir.join(format!("{work}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn clisc(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(CLI);
    cmd.args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running clisc")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn dry_run_prints_job_arrays_dependencies_and_resources() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 7, [48, 48, 24]);
    let config = write_pipeline(
        root,
        "dry",
        r#"
[slurm]
shards = 3
partition = "cpu"
memory = "8G"
time = "01:00:00"
extra = ["--account=lab"]

[slurm.steps.pseudo-masks]
partition = "gpu"
gpus = 1

[slurm.steps.network-1]
partition = "gpu"
gpus = 2
time = "1-00:00:00"
"#,
    );
    let out = clisc(
        &[
            "slurm",
            "submit",
            "--config",
            config.to_str().unwrap(),
            "--dry-run",
        ],
        root,
        &[],
    );
    assert_ok(&out, "clisc slurm submit --dry-run");
    let printed = text(&out.stdout);
    // One script per job, in chain order.
    let scripts: BTreeMap<String, String> = printed
        .split("# ==== ")
        .skip(1)
        .map(|s| {
            let name = s.split_whitespace().next().unwrap().to_string();
            (name, s.to_string())
        })
        .collect();
    let names: Vec<&str> = scripts.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "01-pseudo-labels.sbatch",
            "02-pseudo-labels-merge.sbatch",
            "03-roi.sbatch",
            "04-prompts.sbatch",
            "05-prompts-merge.sbatch",
            "06-pseudo-masks.sbatch",
            "07-pseudo-masks-merge.sbatch",
            "08-network-1.sbatch",
            "09-filter.sbatch",
            "10-filter-merge.sbatch",
            "11-network-2.sbatch",
            "12-predictions.sbatch",
            "13-predictions-merge.sbatch",
            "14-finish.sbatch",
        ],
        "{printed}"
    );
    let script = |name: &str| &scripts[name];
    // Per-case steps are arrays of shards; training steps are single jobs.
    for step in [
        "pseudo-labels",
        "prompts",
        "pseudo-masks",
        "filter",
        "predictions",
    ] {
        let s = scripts
            .iter()
            .find(|(n, _)| n.ends_with(&format!("-{step}.sbatch")))
            .map(|(_, s)| s)
            .unwrap();
        assert!(s.contains("#SBATCH --array=0-2\n"), "{s}");
        assert!(
            s.contains(&format!(
                "--only' '{step}' '--shard' \"${{SLURM_ARRAY_TASK_ID}}/3\""
            )),
            "{s}"
        );
    }
    for single in [
        "03-roi.sbatch",
        "08-network-1.sbatch",
        "11-network-2.sbatch",
    ] {
        assert!(!script(single).contains("--array"), "{}", script(single));
    }
    // Dependencies: nothing before the first job; a merge waits for its
    // array to end (even with failures) and for the job before the array
    // to succeed; everything else waits for the job before it.
    assert!(!script("01-pseudo-labels.sbatch").contains("--dependency"));
    assert!(script("07-pseudo-masks-merge.sbatch")
        .contains("#SBATCH --dependency=afterany:<pseudo-masks>,afterok:<prompts-merge>\n"));
    assert!(script("08-network-1.sbatch")
        .contains("#SBATCH --dependency=afterok:<pseudo-masks-merge>\n"));
    assert!(
        script("14-finish.sbatch").contains("#SBATCH --dependency=afterok:<predictions-merge>\n")
    );
    assert!(script("14-finish.sbatch").contains("--kill-on-invalid-dep=yes"));
    // Resources: defaults, per-step overrides, no GPU for merges.
    let net1 = script("08-network-1.sbatch");
    for line in [
        "--partition=gpu",
        "--gres=gpu:2",
        "--time=1-00:00:00",
        "--mem=8G",
        "--account=lab",
        "--cpus-per-task=1",
    ] {
        assert!(
            net1.contains(&format!("#SBATCH {line}\n")),
            "{line}: {net1}"
        );
    }
    assert!(script("06-pseudo-masks.sbatch").contains("#SBATCH --gres=gpu:1\n"));
    let merge = script("07-pseudo-masks-merge.sbatch");
    assert!(
        merge.contains("#SBATCH --partition=gpu\n") && !merge.contains("--gres"),
        "{merge}"
    );
    let roi = script("03-roi.sbatch");
    for line in ["--partition=cpu", "--time=01:00:00", "--mem=8G"] {
        assert!(roi.contains(&format!("#SBATCH {line}\n")), "{line}: {roi}");
    }
    assert!(!roi.contains("--gres"), "{roi}");
    // A dry run submits and writes nothing.
    assert!(!root.join("dry/slurm").exists());
}

#[test]
fn slurm_section_errors_name_the_file_position_and_the_expected_value() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 3, [24, 24, 12]);
    let config = write_pipeline(
        root,
        "bad",
        "\n[slurm]\nshards = 0\nmemory = \"16GB\"\n\n[slurm.steps.networks]\ngpus = 1\n",
    );
    let out = clisc(&["check", config.to_str().unwrap()], root, &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let written = std::fs::read_to_string(&config).unwrap();
    let line_of = |needle: &str| 1 + written.lines().position(|l| l.contains(needle)).unwrap();
    let file = config.display().to_string();
    for expected in [
        format!("{file}:{}:10: [slurm] shards: must be at least 1", line_of("shards = 0")),
        format!(
            "{file}:{}:10: [slurm] memory: expected a Slurm size such as \"16G\" or \"4000M\", found \"16GB\"",
            line_of("memory =")
        ),
        format!(
            "{file}:{}:14: [slurm.steps]: unknown step `networks`",
            line_of("[slurm.steps.networks]")
        ),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
}

/// Starts (or finds running) the one-node cluster; returns its SLURM_CONF.
fn local_cluster() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-local.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .output()
        .expect("running scripts/slurm-local.sh");
    assert!(
        out.status.success(),
        "the local Slurm cluster did not start (scripts/slurm-local.sh needs root, slurm-wlm and munge; scripts/ci-deps.sh installs them):\n{}",
        text(&out.stderr)
    );
    let dir = std::env::var("CLISC_SLURM_DIR").unwrap_or_else(|_| "/tmp/clisc-slurm".into());
    format!("{dir}/slurm.conf")
}

/// A submitted job: (id, name, array tasks or `-`, dependency or `-`).
type Submitted = Vec<(String, String, String, String)>;

fn submit(config: &Path, cwd: &Path, slurm_conf: &str) -> Submitted {
    let out = clisc(
        &["slurm", "submit", "--config", config.to_str().unwrap()],
        cwd,
        &[("SLURM_CONF", slurm_conf)],
    );
    assert_ok(&out, "clisc slurm submit");
    text(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "unexpected line {l:?}");
            (f[0].into(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect()
}

/// Waits until none of `jobs` is queued or running; returns the final
/// state of every job (array tasks as `id_task`).
fn wait(jobs: &Submitted, slurm_conf: &str, logs: &Path) -> BTreeMap<String, String> {
    let ids: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = Command::new("squeue")
            .args(["--noheader", "--format=%F"])
            .env("SLURM_CONF", slurm_conf)
            .output()
            .expect("running squeue");
        assert!(out.status.success(), "squeue: {}", text(&out.stderr));
        let queued = text(&out.stdout);
        if !queued.lines().any(|l| ids.contains(&l.trim())) {
            break;
        }
        if Instant::now() > deadline {
            let mut logs_text = String::new();
            for e in std::fs::read_dir(logs).into_iter().flatten().flatten() {
                logs_text += &format!(
                    "== {}\n{}\n",
                    e.path().display(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                );
            }
            panic!("jobs still queued after 300 s:\n{queued}\n{logs_text}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut states = BTreeMap::new();
    for id in ids {
        let out = Command::new("scontrol")
            .args(["--oneliner", "show", "job", id])
            .env("SLURM_CONF", slurm_conf)
            .output()
            .expect("running scontrol");
        assert!(
            out.status.success(),
            "scontrol show job {id}: {}",
            text(&out.stderr)
        );
        for line in text(&out.stdout).lines() {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(&format!("{name}=")))
                    .unwrap_or_default()
                    .to_string()
            };
            let task = field("ArrayTaskId");
            let key = if task.is_empty() || task == "N/A" {
                id.to_string()
            } else {
                format!("{id}_{task}")
            };
            states.insert(key, field("JobState"));
        }
    }
    states
}

fn job<'a>(jobs: &'a Submitted, name: &str) -> &'a (String, String, String, String) {
    jobs.iter()
        .find(|j| j.1 == name)
        .unwrap_or_else(|| panic!("no job {name} in {jobs:?}"))
}

#[test]
fn a_run_on_slurm_matches_a_local_run_and_resubmits_only_missing_shards() {
    let slurm_conf = local_cluster();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 7, [48, 48, 24]);

    // 1. The reference: a local run.
    let t = Instant::now();
    let local_config = write_pipeline(root, "local", "");
    let out = clisc(
        &["run", "--config", local_config.to_str().unwrap()],
        root,
        &[],
    );
    assert_ok(&out, "clisc run");
    eprintln!("local run: {:.1} s", t.elapsed().as_secs_f64());
    let local = root.join("local");

    // 2. The same pipeline on the cluster, two shards per per-case step.
    // One test case cannot be written: a folder stands where its
    // prediction goes, so the predictions task that owns it fails.
    let config = write_pipeline(
        root,
        "cluster",
        "\n[slurm]\nshards = 2\nmemory = \"2G\"\ntime = \"10:00\"\n",
    );
    let work = root.join("cluster");
    let splits = std::fs::read_to_string(local.join("splits.csv")).unwrap();
    let test_cases: Vec<&str> = splits
        .lines()
        .filter_map(|l| l.strip_suffix(",test"))
        .collect();
    assert_eq!(test_cases.len(), 2, "{splits}");
    let blocked = test_cases[1]; // position 1: shard 1/2
    let blocker = work.join(format!("08-predictions/cropped/{blocked}.nii.gz"));
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();

    let t = Instant::now();
    let first = submit(&config, root, &slurm_conf);
    let names: Vec<&str> = first.iter().map(|j| j.1.as_str()).collect();
    assert_eq!(names.len(), 14, "{first:?}");
    assert_eq!(job(&first, "pseudo-masks").2, "0-1");
    let states = wait(&first, &slurm_conf, &work.join("slurm/logs"));
    eprintln!("first submission: {:.1} s", t.elapsed().as_secs_f64());
    let state = |name: &str, task: Option<u32>| {
        let id = &job(&first, name).0;
        let key = task.map_or(id.clone(), |t| format!("{id}_{t}"));
        states
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("no state for {key}: {states:?}"))
    };
    for done in [
        "pseudo-labels-merge",
        "roi",
        "network-1",
        "filter-merge",
        "network-2",
    ] {
        assert_eq!(state(done, None), "COMPLETED", "{done}: {states:?}");
    }
    assert_eq!(state("predictions", Some(0)), "COMPLETED", "{states:?}");
    assert_eq!(state("predictions", Some(1)), "FAILED", "{states:?}");
    assert_eq!(state("predictions-merge", None), "FAILED", "{states:?}");
    assert_eq!(state("finish", None), "CANCELLED", "{states:?}");
    // The merge names the missing case and its shard.
    let merge_log = std::fs::read_to_string(work.join(format!(
        "slurm/logs/predictions-merge-{}.out",
        job(&first, "predictions-merge").0
    )))
    .unwrap();
    assert!(
        merge_log.contains(&format!(
            "step `predictions`: 1 of 2 cases were not done by a finished shard: {blocked} (shard 1/2)"
        )),
        "{merge_log}"
    );
    let m = manifest(&work);
    assert_eq!(m["steps"]["network-2"]["status"], "done", "{m:#}");
    assert!(m["steps"]["evaluation"].is_null(), "{m:#}");

    // 3. Clear the obstacle and submit again: only shard 1 of the
    // predictions runs, then the merge and the final job.
    std::fs::remove_dir_all(&blocker).unwrap();
    let before = modification_times(&work, &["shards"]);
    let t = Instant::now();
    let second = submit(&config, root, &slurm_conf);
    let names: Vec<&str> = second.iter().map(|j| j.1.as_str()).collect();
    assert_eq!(
        names,
        ["predictions", "predictions-merge", "finish"],
        "{second:?}"
    );
    assert_eq!(job(&second, "predictions").2, "1");
    let pid = &job(&second, "predictions").0;
    assert_eq!(
        job(&second, "predictions-merge").3,
        format!("afterany:{pid}")
    );
    let states = wait(&second, &slurm_conf, &work.join("slurm/logs"));
    eprintln!("second submission: {:.1} s", t.elapsed().as_secs_f64());
    assert!(states.values().all(|s| s == "COMPLETED"), "{states:?}");
    // Nothing that was done was done again.
    let after = modification_times(&work, &["shards"]);
    for (path, modified) in &before {
        // The manifest and the run lock's holder lines change with every job.
        let name = path.file_name().unwrap();
        if path.starts_with("slurm") || name == "manifest.json" || name == ".clisc-run.lock" {
            continue;
        }
        // Every run rewrites these from cached results (the filter's
        // selection is redone from the cached candidates: cheap, same bytes).
        let p = path.to_str().unwrap();
        if p.starts_with("10-report")
            || ["summary.json", "splits.csv", "06-filter/decisions.json"].contains(&p)
        {
            continue;
        }
        assert_eq!(after.get(path), Some(modified), "{p} was rewritten");
    }

    // A complete run has nothing left to submit.
    let out = clisc(
        &["slurm", "submit", "--config", config.to_str().unwrap()],
        root,
        &[("SLURM_CONF", slurm_conf.as_str())],
    );
    assert_ok(&out, "clisc slurm submit of a complete run");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("nothing to submit"),
        "{}",
        text(&out.stderr)
    );

    // 4. The results are those of the local run: every step's
    // fingerprint, both networks, the filter's decisions, every per-case
    // artefact and the evaluation.
    let (m_local, m_cluster) = (manifest(&local), manifest(&work));
    for (step, record) in m_local["steps"].as_object().unwrap() {
        assert_eq!(
            record["fingerprint"], m_cluster["steps"][step]["fingerprint"],
            "{step}"
        );
        assert_eq!(m_cluster["steps"][step]["status"], "done", "{step}");
    }
    for part in ["05-network-1/model.ckpt", "07-network-2/model.ckpt"] {
        let (a, b) = (
            safetensors(&local.join(part)),
            safetensors(&work.join(part)),
        );
        assert_eq!(a.0, b.0, "{part}: other tensors or metadata");
        assert!(a.1 == b.1, "{part}: the weights differ");
    }
    for part in [
        "01-pseudo-labels",
        "02-roi",
        "03-prompts",
        "04-pseudo-masks",
        "06-filter",
        "08-predictions",
        "09-evaluation",
    ] {
        // Shard records are left out: a cluster run has them, a local run not.
        let (a, b) = (
            modification_times(&local.join(part), &["shards"]),
            modification_times(&work.join(part), &["shards"]),
        );
        assert!(a.len() > 2, "{part}: {a:?}");
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{part}: other files"
        );
        for p in a.keys() {
            let (x, y) = (
                std::fs::read(local.join(part).join(p)).unwrap(),
                std::fs::read(work.join(part).join(p)).unwrap(),
            );
            assert!(x == y, "{part}/{} differs", p.display());
        }
    }
    let (expected, got) = (summary(&local), summary(&work));
    assert!(
        expected["test"]["final"]
            .as_array()
            .is_some_and(|a| a.len() == 2),
        "{expected:#}"
    );
    for key in ["test", "pseudo_masks", "slice_labels", "rois", "filter"] {
        assert_eq!(got[key], expected[key], "summary.{key} differs");
    }
    // The training reports reach the summary from the training jobs; all
    // but the wall-clock figures are the same.
    for step in ["roi-extractor", "network-1", "network-2"] {
        let (e, g) = (
            &expected["stage_reports"][step],
            &got["stage_reports"][step],
        );
        let e = e
            .as_object()
            .unwrap_or_else(|| panic!("no {step} report: {expected:#}"));
        assert_eq!(
            e.keys().collect::<Vec<_>>(),
            g.as_object().unwrap().keys().collect::<Vec<_>>(),
            "{step}"
        );
        for (name, value) in e.iter().filter(|(n, _)| !n.contains("seconds")) {
            assert_eq!(&g[name], value, "stage_reports.{step}.{name}");
        }
    }
}
