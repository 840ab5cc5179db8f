//! One run at a time per work folder.
//!
//! A run holds an advisory lock (`flock`) on `<work>/.clisc-run.lock` from
//! before it reads the dataset until it ends. A second run on the same
//! folder refuses at once and names the holder, instead of both writing
//! the same artefacts. Shards (`--shard i/n`), which are meant to run side
//! by side, share the lock; a whole run or a merge needs it alone. (The
//! lock does not tell the shards of different steps apart; the shard
//! records of each step do, see `clisc_pipeline::shard`.) The kernel drops the
//! lock with the process, so a killed run never leaves the folder locked.
//! Where there is no `flock` (not Unix, or a file system mounted without
//! locks, such as NFS with `nolock`), runs go on unlocked with a warning.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the work folder.
pub const LOCK_FILE: &str = ".clisc-run.lock";

/// Whether other runs may hold the lock at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// A whole run, or the merge of a step's shards: alone.
    Exclusive,
    /// One shard of a per-case step: alongside the step's other shards.
    Shared,
}

/// Why a run could not take the work folder.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The folder or the lock file cannot be created (read-only, full, ...).
    #[error("cannot use {path} as the run's lock file: {error}")]
    Create {
        /// The lock file.
        path: PathBuf,
        /// The system's error (in the message, not a chained source, so
        /// that it is printed once).
        error: io::Error,
    },
    /// Another run holds the folder.
    #[error("the work folder {root} is in use by another clisc run ({holder}); wait for it to end or stop it (a stopped run releases the folder)")]
    Held {
        /// The work folder.
        root: PathBuf,
        /// What the lock file says about its holder(s).
        holder: String,
    },
}

/// The lock of a running run; released when dropped (or the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of work folder `root` (created when missing), or
    /// says who holds it. `what` describes this run for the next one's
    /// message (e.g. `clisc run`, `shard 1/4 of pseudo-masks`).
    pub fn acquire(root: &Path, mode: LockMode, what: &str) -> Result<Self, LockError> {
        let path = root.join(LOCK_FILE);
        let create = |error| LockError::Create {
            path: path.clone(),
            error,
        };
        std::fs::create_dir_all(root).map_err(create)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(create)?;
        // Alone first: a shard that finds nobody clears the holder lines
        // of runs that ended, then shares.
        let alone = match mode {
            LockMode::Exclusive => try_lock(&file, LockMode::Exclusive).map(|()| true),
            LockMode::Shared => join_shards(&file),
        };
        let alone = match alone {
            Ok(alone) => alone,
            Err(e) if unsupported(&e) => {
                tracing::warn!(
                    "{}: this file system does not support locks ({e}); a second run on the same work folder would not be stopped",
                    path.display()
                );
                return Ok(Self { _file: file });
            }
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(create(e)),
            Err(_) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.lines().collect::<Vec<_>>().join("; ");
                return Err(LockError::Held {
                    root: root.to_path_buf(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder
                    },
                });
            }
        };
        // Say who holds it: the first holder replaces what ended runs
        // wrote, a shard joining others adds its line to theirs.
        if alone {
            file.set_len(0).map_err(create)?;
            if mode == LockMode::Shared {
                try_lock(&file, LockMode::Shared).map_err(create)?;
            }
        }
        let line = format!(
            "{what}: process {} on {} since {}\n",
            std::process::id(),
            host_name(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        file.write_all(line.as_bytes()).map_err(create)?;
        Ok(Self { _file: file })
    }
}

/// Takes the lock for a shard: alone when nobody holds it (`Ok(true)`),
/// else shared with other shards (`Ok(false)`). A shard that is clearing
/// the holder lines holds it alone for a moment, so shards that start
/// together wait for each other up to [`SHARD_WAIT`]; a whole run holds it
/// longer than that and the shard gives up (`WouldBlock`).
fn join_shards(file: &File) -> io::Result<bool> {
    let start = std::time::Instant::now();
    loop {
        let err = match try_lock(file, LockMode::Exclusive) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            Err(_) => match try_lock(file, LockMode::Shared) {
                Ok(()) => return Ok(false),
                Err(e) => e,
            },
        };
        if err.kind() != io::ErrorKind::WouldBlock || start.elapsed() > SHARD_WAIT {
            return Err(err);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How long a shard waits for another shard that holds the lock alone.
const SHARD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(unix)]
fn try_lock(file: &File, mode: LockMode) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let operation = match mode {
        LockMode::Exclusive => libc::LOCK_EX,
        LockMode::Shared => libc::LOCK_SH,
    } | libc::LOCK_NB;
    // SAFETY: flock on a file descriptor this function borrows; it only
    // changes the lock state of the open file.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File, _mode: LockMode) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Errors that mean "no locks here" rather than "locked".
fn unsupported(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::Unsupported {
        return true;
    }
    #[cfg(unix)]
    if let Some(code) = e.raw_os_error() {
        return [libc::ENOSYS, libc::ENOLCK, libc::EOPNOTSUPP].contains(&code);
    }
    false
}

/// This machine's name, for the holder line.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".into())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_is_refused_and_told_who_holds_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let first = RunLock::acquire(&work, LockMode::Exclusive, "clisc run").unwrap();
        let err = RunLock::acquire(&work, LockMode::Exclusive, "clisc run").unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{message}");
        assert!(
            message.contains(&format!("clisc run: process {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains(&work.display().to_string()), "{message}");
        // A shard cannot join a whole run either.
        assert!(RunLock::acquire(&work, LockMode::Shared, "shard 0/2").is_err());
        drop(first);
        RunLock::acquire(&work, LockMode::Exclusive, "clisc run").unwrap();
    }

    #[test]
    fn shards_share_the_folder_and_keep_a_whole_run_out() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunLock::acquire(dir.path(), LockMode::Shared, "shard 0/2").unwrap();
        let b = RunLock::acquire(dir.path(), LockMode::Shared, "shard 1/2").unwrap();
        let err = RunLock::acquire(dir.path(), LockMode::Exclusive, "merge").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("shard 0/2") && message.contains("shard 1/2"),
            "{message}"
        );
        drop((a, b));
        RunLock::acquire(dir.path(), LockMode::Exclusive, "merge").unwrap();
        // The first shard of a later step clears the lines of ended runs.
        let c = RunLock::acquire(dir.path(), LockMode::Shared, "shard 0/3").unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(
            text.starts_with("shard 0/3: process") && text.lines().count() == 1,
            "{text}"
        );
        drop(c);
    }

    #[test]
    fn an_unwritable_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-folder");
        std::fs::write(&file, b"").unwrap();
        let err =
            RunLock::acquire(&file.join("work"), LockMode::Exclusive, "clisc run").unwrap_err();
        assert!(matches!(err, LockError::Create { .. }));
        assert!(err.to_string().contains("not-a-folder"), "{err}");
    }
}
