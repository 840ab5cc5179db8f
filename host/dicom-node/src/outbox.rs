//! A folder of DICOM files waiting to be sent, so that a failed send loses
//! nothing: files are copied into `<dir>/pending/` before the first try,
//! moved to `<dir>/sent/` only once the receiver confirmed them, and stay
//! in `pending/` (across failures and restarts) until then.

use crate::net::{NetError, StoreOutcome};
use clisc_dicom::DicomError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A persistent send queue (see the module documentation).
#[derive(Debug, Clone)]
pub struct Outbox {
    pending: PathBuf,
    sent: PathBuf,
}

/// The result of one [`Outbox::flush`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushReport {
    /// Files confirmed by the receiver (now in `sent/`).
    pub sent: Vec<PathBuf>,
    /// Files still pending, with the reason of this attempt's failure.
    pub failed: Vec<(PathBuf, NetError)>,
}

fn werr(path: &Path, e: impl std::fmt::Display) -> DicomError {
    DicomError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Outbox {
    /// Opens (creating if needed) the queue in `dir`.
    pub fn open(dir: &Path) -> Result<Self, DicomError> {
        let (pending, sent) = (dir.join("pending"), dir.join("sent"));
        for d in [&pending, &sent] {
            std::fs::create_dir_all(d).map_err(|e| werr(d, format!("creating the folder: {e}")))?;
        }
        Ok(Self { pending, sent })
    }

    /// Copies `file` into the queue under `name` (a plain file name; a
    /// numeric suffix is added if that name is taken). The copy is written
    /// under a temporary name and renamed, so the queue never holds half a
    /// file. Returns the queued path.
    pub(crate) fn enqueue(&self, file: &Path, name: &str) -> Result<PathBuf, DicomError> {
        let name = clisc_dicom::safe_file_name(name);
        let mut target = self.pending.join(&name);
        let mut i = 2;
        while target.exists()
            || self
                .sent
                .join(target.file_name().unwrap_or_default())
                .exists()
        {
            target = self.pending.join(format!("{i}_{name}"));
            i += 1;
        }
        let tmp = self.pending.join(format!(
            ".{}.part",
            target.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::copy(file, &tmp)
            .map_err(|e| werr(&tmp, format!("copying {}: {e}", file.display())))?;
        std::fs::rename(&tmp, &target).map_err(|e| werr(&target, e))?;
        Ok(target)
    }

    /// Whether a file named `name` is pending or was sent.
    pub fn contains(&self, name: &str) -> bool {
        let name = clisc_dicom::safe_file_name(name);
        self.pending.join(&name).exists() || self.sent.join(&name).exists()
    }

    /// The files waiting to be sent, oldest name first.
    pub fn pending(&self) -> Result<Vec<PathBuf>, DicomError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.pending)
            .map_err(|e| DicomError::Read {
                path: self.pending.clone(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .starts_with('.')
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Tries to send every pending file with `send` (e.g.
    /// [`crate::net::store_files`]), which gets the files and returns each
    /// one's outcome (or an error for all of them, e.g. when the receiver
    /// cannot be reached). Confirmed files move to `sent/`; the others
    /// stay pending.
    pub fn flush<F>(&self, send: F) -> Result<FlushReport, DicomError>
    where
        F: FnOnce(&[PathBuf]) -> Result<Vec<StoreOutcome>, NetError>,
    {
        let files = self.pending()?;
        let mut report = FlushReport::default();
        if files.is_empty() {
            return Ok(report);
        }
        match send(&files) {
            Err(why) => {
                report.failed = files.into_iter().map(|f| (f, why.clone())).collect();
            }
            Ok(outcomes) => {
                for f in files {
                    match outcomes.iter().find(|o| o.path == f).map(|o| &o.result) {
                        Some(Ok(())) => {
                            let dst = self.sent.join(f.file_name().unwrap_or_default());
                            std::fs::rename(&f, &dst).map_err(|e| werr(&dst, e))?;
                            report.sent.push(dst);
                        }
                        Some(Err(why)) => report.failed.push((f, why.clone())),
                        None => report.failed.push((f, NetError::NotAttempted)),
                    }
                }
            }
        }
        for (f, why) in &report.failed {
            tracing::warn!("{} not sent yet (kept in the outbox): {why}", f.display());
        }
        Ok(report)
    }

    /// Flushes until nothing is pending or `attempts` flushes were made,
    /// waiting `delay` after the first failure and doubling it after each
    /// further one (at most 60 s). Returns the last report (its `failed`
    /// list is empty on success) and all files sent.
    pub fn deliver<F>(
        &self,
        mut send: F,
        attempts: u32,
        delay: Duration,
    ) -> Result<(Vec<PathBuf>, FlushReport), DicomError>
    where
        F: FnMut(&[PathBuf]) -> Result<Vec<StoreOutcome>, NetError>,
    {
        let mut all_sent = Vec::new();
        let mut wait = delay;
        let mut last = FlushReport::default();
        for attempt in 1..=attempts.max(1) {
            last = self.flush(&mut send)?;
            all_sent.extend(last.sent.iter().cloned());
            if last.failed.is_empty() {
                break;
            }
            if attempt < attempts {
                tracing::info!(
                    "{} file(s) pending; retrying in {:.1} s (attempt {} of {attempts})",
                    last.failed.len(),
                    wait.as_secs_f64(),
                    attempt + 1
                );
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
        Ok((all_sent, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> NetError {
        NetError::Associate {
            peer: "PACS@host:104".into(),
            message: "connection refused".into(),
        }
    }

    #[test]
    fn failed_sends_keep_the_file_until_it_is_confirmed() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("seg.dcm");
        std::fs::write(&src, b"payload").unwrap();
        let outbox = Outbox::open(&d.path().join("outbox")).unwrap();
        let queued = outbox.enqueue(&src, "../../escape/seg.dcm").unwrap();
        assert_eq!(queued.parent().unwrap(), d.path().join("outbox/pending"));
        // Two failing attempts, then success.
        let mut calls = 0;
        let (sent, last) = outbox
            .deliver(
                |files| {
                    calls += 1;
                    assert_eq!(files, std::slice::from_ref(&queued));
                    assert_eq!(std::fs::read(&files[0]).unwrap(), b"payload");
                    let outcome = |result| {
                        Ok(vec![StoreOutcome {
                            path: files[0].clone(),
                            result,
                        }])
                    };
                    match calls {
                        1 => Err(refused()),
                        2 => outcome(Err(NetError::Status {
                            peer: "PACS@host:104".into(),
                            operation: "C-STORE".into(),
                            status: 0xA700,
                            comment: String::new(),
                        })),
                        _ => outcome(Ok(())),
                    }
                },
                5,
                Duration::from_millis(1),
            )
            .unwrap();
        assert_eq!(calls, 3);
        assert!(last.failed.is_empty());
        assert_eq!(sent.len(), 1);
        assert_eq!(std::fs::read(&sent[0]).unwrap(), b"payload");
        assert!(outbox.pending().unwrap().is_empty());
        // A receiver that never answers: the file stays pending.
        outbox.enqueue(&src, "seg.dcm").unwrap();
        let (_, last) = outbox
            .deliver(|_| Err(refused()), 2, Duration::from_millis(1))
            .unwrap();
        assert_eq!(last.failed.len(), 1);
        assert_eq!(last.failed[0].1, refused());
        assert_eq!(outbox.pending().unwrap().len(), 1);
        assert_eq!(
            std::fs::read(&outbox.pending().unwrap()[0]).unwrap(),
            b"payload"
        );
    }
}
