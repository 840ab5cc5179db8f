//! Faults during a run of the tiny pipeline (`write_tiny_pipeline`):
//!
//! * a full disk (the work folder on a small tmpfs): the run stops with an
//!   error naming the file and saying there is no space, the steps it had
//!   finished keep outputs identical to an uninterrupted run's, no
//!   temporary file is left behind, and after space is freed the same
//!   command finishes with the uninterrupted run's results;
//! * a read-only work folder (a read-only tmpfs): the run stops before any
//!   work with an error naming the lock file and the system's reason once;
//! * SIGKILL at seeded random moments in three steps drawn from those
//!   `tests/resume.rs` does not cover: each killed run resumes in its work
//!   folder and ends with the uninterrupted run's results.
//!
//! The full-disk and read-only tests need to mount a tmpfs. They first try
//! `mount -t tmpfs` in the test process (works as root with
//! `CAP_SYS_ADMIN`, as in CI). When that fails, the test binary runs that
//! one test again inside a new user and mount namespace, `unshare --user
//! --map-root-user --mount <test binary> --exact <test>` (util-linux;
//! needs unprivileged user namespaces), where mounting a tmpfs is allowed
//! without root; the mount exists only there and the test's whole body,
//! checks included, runs there. When neither route works the test FAILS,
//! quoting what each route tried and its error: it never passes without
//! running its checks. `CLISC_FAULTS_NO_DIRECT_MOUNT=1` skips the direct
//! mount so that the namespace route is exercised even as root;
//! `CLISC_FAULTS_IN_NAMESPACE` is set by the test binary for its re-run.

use clisc_tests::{
    assert_same_files, file_contents, manifest, run_to_end, safetensors, start_run,
    write_tiny_dataset, write_tiny_pipeline,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_clisc-cli");

/// Step folders whose files must be byte-identical between two runs.
const COMPARED: [&str; 7] = [
    "01-pseudo-labels",
    "02-roi",
    "03-prompts",
    "04-pseudo-masks",
    "06-filter",
    "08-predictions",
    "09-evaluation",
];

/// Asserts that `work` holds the results of the uninterrupted run in
/// `reference`: networks, per-step artefacts, evaluation.
fn assert_same_results(reference: &Path, work: &Path, what: &str) {
    for part in ["05-network-1/model.ckpt", "07-network-2/model.ckpt"] {
        let (a, b) = (
            safetensors(&reference.join(part)),
            safetensors(&work.join(part)),
        );
        assert_eq!(a.0, b.0, "{what}: {part}: other tensors or metadata");
        assert!(a.1 == b.1, "{what}: {part}: the weights differ");
    }
    for part in COMPARED {
        assert_same_files(&reference.join(part), &work.join(part), what);
    }
    let summary = |w: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(w.join("summary.json")).unwrap()).unwrap()
    };
    assert_eq!(
        summary(work)["test"],
        summary(reference)["test"],
        "{what}: evaluation differs"
    );
}

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, bytes: u64) -> Result<Self, String> {
        Self::mount_with(path, &format!("size={bytes}"))
    }

    /// A tmpfs with mount `options` (e.g. `ro,size=1m`).
    fn mount_with(path: &Path, options: &str) -> Result<Self, String> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(path.to_path_buf()))
    }

    fn resize(&self, bytes: u64) {
        // Only the new size: without `--options-mode ignore`, mount(8)
        // passes again the options it reads in mountinfo, and in a user
        // namespace a tmpfs shows `uid=`/`gid=` of the outer user, which
        // the namespace does not map (EINVAL).
        let out = Command::new("mount")
            .args(["--options-mode", "ignore"])
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Set by this test binary on its re-run of a test inside a user+mount
/// namespace.
const IN_NAMESPACE: &str = "CLISC_FAULTS_IN_NAMESPACE";
/// When set (non-empty), the direct mount is not tried: tests that need a
/// tmpfs go straight to the namespace route.
const NO_DIRECT_MOUNT: &str = "CLISC_FAULTS_NO_DIRECT_MOUNT";

/// Whether test `name`, which mounts tmpfs, runs its body in this process:
/// true when this process may mount one. Otherwise this test binary runs
/// the test again, alone, inside a new user+mount namespace, where
/// mounting a tmpfs needs no root, and this returns false once that run
/// passed. Panics, with what was tried and why it failed, when neither
/// route works or the re-run fails.
fn mounts_here_or_reruns_in_a_namespace(name: &str) -> bool {
    let in_namespace = std::env::var_os(IN_NAMESPACE).is_some();
    let direct =
        if !in_namespace && std::env::var_os(NO_DIRECT_MOUNT).is_some_and(|v| !v.is_empty()) {
            Err(format!("not tried ({NO_DIRECT_MOUNT} is set)"))
        } else {
            let probe = tempfile::tempdir().unwrap();
            Tmpfs::mount_with(&probe.path().join("probe"), "size=64k").map(drop)
        };
    let direct = match direct {
        Ok(()) => return true,
        Err(e) if in_namespace => {
            panic!("cannot mount a tmpfs inside the user+mount namespace: {e}")
        }
        Err(e) => e,
    };
    let exe = std::env::current_exe().unwrap();
    let tried = format!(
        "this test needs to mount a tmpfs; tried:\n\
         1. `mount -t tmpfs` in the test process: {}\n\
         2. `unshare --user --map-root-user --mount {} --exact {name}` \
         (re-run inside a user+mount namespace): ",
        direct.trim(),
        exe.display()
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount"])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .output()
        .unwrap_or_else(|e| panic!("{tried}cannot run unshare: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{tried}{} (unshare failed, or the test failed in the namespace)\
         \n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    eprintln!(
        "ran in a user+mount namespace (direct mount: {}):\n{stderr}",
        direct.trim()
    );
    false
}

/// The tiny dataset and one uninterrupted run of the tiny pipeline, shared
/// by the tests of this file: (folder holding `data/` and the run's work
/// folder `reference/`, the bytes it wrote).
fn reference() -> &'static (tempfile::TempDir, u64) {
    static REFERENCE: std::sync::OnceLock<(tempfile::TempDir, u64)> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_dataset(&dir.path().join("data"), 7, [40, 40, 24]);
        let config = write_tiny_pipeline(dir.path(), "reference");
        let t = Instant::now();
        run_to_end(CLI, &config, &dir.path().join("reference.log"));
        eprintln!("uninterrupted run: {:.1} s", t.elapsed().as_secs_f64());
        let total = file_contents(&dir.path().join("reference"))
            .values()
            .map(|b| b.len() as u64)
            .sum();
        (dir, total)
    })
}

fn partial_files(dir: &Path) -> Vec<PathBuf> {
    file_contents(dir)
        .into_keys()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(".partial.") || name.ends_with(".part") || name.contains(".tmp")
        })
        .collect()
}

#[test]
fn full_disk_gives_a_clear_error_keeps_finished_steps_and_resumes() {
    if !mounts_here_or_reruns_in_a_namespace(
        "full_disk_gives_a_clear_error_keeps_finished_steps_and_resumes",
    ) {
        return;
    }
    let (dir, total) = reference();
    let (root, total) = (dir.path(), *total);

    // Room for about half of what the run writes.
    let work = root.join("full");
    let tmpfs = Tmpfs::mount(&work, (total / 2).next_multiple_of(4096))
        .unwrap_or_else(|e| panic!("cannot mount a tmpfs: {e}"));
    let config = write_tiny_pipeline(root, "full");
    let log = root.join("full.log");
    let status = start_run(CLI, &config, &log).wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success(),
        "the run succeeded on a full disk:\n{text}"
    );
    let error = text
        .lines()
        .rev()
        .find(|l| l.contains("No space left on device"))
        .unwrap_or_else(|| panic!("no 'No space left on device' in:\n{text}"));
    assert!(
        error.contains(&work.display().to_string()),
        "the error does not name the file: {error}"
    );
    eprintln!("full disk error: {error}");

    // What was finished is intact, and nothing half-written is left.
    let m = manifest(&work);
    let done: Vec<String> = m["steps"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["status"] == "done")
        .map(|(name, _)| name.clone())
        .collect();
    assert!(
        !done.is_empty(),
        "no step finished before the disk filled: {m:#}"
    );
    let mut checked = 0;
    for part in COMPARED {
        if done.iter().any(|s| part.ends_with(s.as_str())) {
            assert_same_files(
                &root.join("reference").join(part),
                &work.join(part),
                "after a full disk",
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "finished steps {done:?} have no compared folder"
    );
    assert_eq!(
        partial_files(&work),
        Vec::<PathBuf>::new(),
        "temporary files left"
    );

    // Space freed: the same command finishes with the same results.
    tmpfs.resize((total * 3).next_multiple_of(4096));
    run_to_end(CLI, &config, &root.join("full-resumed.log"));
    assert_same_results(&root.join("reference"), &work, "resumed after a full disk");
    drop(tmpfs);
}

#[test]
fn a_read_only_work_folder_fails_before_any_work_and_names_the_path() {
    if !mounts_here_or_reruns_in_a_namespace(
        "a_read_only_work_folder_fails_before_any_work_and_names_the_path",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_tiny_dataset(&root.join("data"), 7, [32, 32, 16]);
    let work = root.join("read-only");
    let _tmpfs = Tmpfs::mount_with(&work, "ro,size=1m")
        .unwrap_or_else(|e| panic!("cannot mount a read-only tmpfs: {e}"));
    let config = write_tiny_pipeline(root, "read-only");
    let log = root.join("read-only.log");
    let status = start_run(CLI, &config, &log).wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    let lock = work.join(".clisc-run.lock");
    assert!(
        text.contains(&format!(
            "cannot use {} as the run's lock file",
            lock.display()
        )) && text.matches("Read-only file system").count() == 1,
        "{text}"
    );
    // Nothing was read or computed before: no step started.
    assert!(!text.contains("pseudo-labels"), "{text}");
}

/// A small deterministic generator (SplitMix64) for the kill moments.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run() {
    let (dir, _) = reference();
    let root = dir.path();

    // Three steps drawn (seeded) from those tests/resume.rs does not cover;
    // each run is killed a random 0-150 ms after the manifest shows its
    // step started (or, for a step too short to catch running, finished),
    // then resumed in its own folder.
    let mut steps = vec![
        "pseudo-labels",
        "roi",
        "prompts",
        "pseudo-masks",
        "filter",
        "network-2",
        "predictions",
    ];
    let mut state = 0x5EED_u64;
    for k in 0..3u32 {
        let step = steps.remove((splitmix(&mut state) % steps.len() as u64) as usize);
        let delay = Duration::from_millis(splitmix(&mut state) % 150);
        let name = format!("killed-{k}");
        let config = write_tiny_pipeline(root, &name);
        let work = root.join(&name);
        let mut child = start_run(CLI, &config, &root.join(format!("{name}.log")));
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let status = std::fs::read(work.join("manifest.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|m| m["steps"][step]["status"].as_str().map(String::from));
            if matches!(status.as_deref(), Some("running" | "done")) {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the run ended ({status}) before step {step} started");
            }
            assert!(Instant::now() < deadline, "step {step} did not start");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(delay);
        let killed = child.try_wait().unwrap().is_none();
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        assert!(killed, "the run ended before the kill during {step}");
        let state_at_kill = if work.join("manifest.json").exists() {
            let m = manifest(&work);
            m["steps"]
                .as_object()
                .map(|s| {
                    s.iter()
                        .map(|(n, r)| format!("{n}={}", r["status"].as_str().unwrap_or("?")))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        } else {
            "no manifest yet".into()
        };
        eprintln!(
            "kill {k}: {} ms into step {step}; steps then: {state_at_kill}",
            delay.as_millis()
        );
        run_to_end(CLI, &config, &root.join(format!("{name}-resumed.log")));
        assert_same_results(&root.join("reference"), &work, &format!("kill {k}"));
    }
}
