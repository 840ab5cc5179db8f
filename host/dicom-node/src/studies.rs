//! The life of a received study in the node's storage folder, written so
//! that a node killed at any moment loses nothing it acknowledged and
//! delivers each SEG once:
//!
//! ```text
//! inbox/<study>/             instances as they arrive (written, synced, then acknowledged)
//!   -> work/<study>.<n>/     taken for segmentation (new arrivals start a new inbox folder)
//!   -> outbox: <study>.<n>.seg.dcm queued (when there is a destination)
//!   -> processed/<study>.<n>/   or   failed/<study>.<n>/ with error.txt
//! results/<study>/seg.dcm    the latest SEG of the study
//! ```
//!
//! `<n>` numbers the takes of a study, so the SEG of each take has its own
//! outbox name. [`StudyStore::recover`], run at start, undoes what a kill
//! interrupted: half-written instances (`*.part`) are removed, a take
//! whose SEG was queued is finished, any other take goes back to the
//! inbox to be segmented again.

use crate::outbox::Outbox;
use clisc_dicom::DicomError;
use std::path::{Path, PathBuf};

/// The suffix of an instance being written (never acknowledged yet).
pub(crate) const PART_SUFFIX: &str = ".part";

/// The node's storage folder (see the module documentation).
#[derive(Debug, Clone)]
pub struct StudyStore {
    /// Received instances, one folder per study.
    pub inbox: PathBuf,
    /// Studies taken for segmentation.
    pub work: PathBuf,
    /// Studies segmented (their instances are kept).
    pub processed: PathBuf,
    /// Studies that could not be segmented, each with `error.txt`.
    pub failed: PathBuf,
    /// `<study>/seg.dcm` of each study.
    pub results: PathBuf,
    /// SEGs waiting to be sent.
    pub outbox: Outbox,
}

/// A study taken out of the inbox for segmentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// The study's inbox folder name.
    pub study: String,
    /// `work/<study>.<n>`, which holds its instances.
    pub dir: PathBuf,
}

impl Take {
    /// The outbox name of this take's SEG.
    pub(crate) fn seg_name(&self) -> String {
        format!(
            "{}.seg.dcm",
            self.dir.file_name().unwrap_or_default().to_string_lossy()
        )
    }
}

/// What [`StudyStore::recover`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Half-written instances removed (never acknowledged).
    pub partial_files_removed: usize,
    /// Takes whose SEG was already queued: moved to `processed/`.
    pub finished: Vec<String>,
    /// Takes put back into the inbox to be segmented again.
    pub requeued: Vec<String>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> DicomError {
    DicomError::Write {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

fn subfolders(dir: &Path) -> Result<Vec<PathBuf>, DicomError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, "listing the folder", e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    Ok(out)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string()
}

impl StudyStore {
    /// Opens (creating) the folders under `root`.
    pub fn open(root: &Path) -> Result<Self, DicomError> {
        let store = Self {
            inbox: root.join("inbox"),
            work: root.join("work"),
            processed: root.join("processed"),
            failed: root.join("failed"),
            results: root.join("results"),
            outbox: Outbox::open(&root.join("outbox"))?,
        };
        for d in [
            &store.inbox,
            &store.work,
            &store.processed,
            &store.failed,
            &store.results,
        ] {
            std::fs::create_dir_all(d).map_err(|e| io_err(d, "creating the folder", e))?;
        }
        Ok(store)
    }

    /// Repairs what a killed node left (see the module documentation).
    pub fn recover(&self) -> Result<Recovery, DicomError> {
        let mut r = Recovery::default();
        for study in subfolders(&self.inbox)? {
            for f in std::fs::read_dir(&study).map_err(|e| io_err(&study, "listing", e))? {
                let p = f.map_err(|e| io_err(&study, "listing", e))?.path();
                if name_of(&p).ends_with(PART_SUFFIX) {
                    std::fs::remove_file(&p).map_err(|e| io_err(&p, "removing", e))?;
                    r.partial_files_removed += 1;
                }
            }
        }
        for dir in subfolders(&self.work)? {
            let study = study_of_take(&name_of(&dir));
            let take = Take {
                study: study.clone(),
                dir,
            };
            if self.outbox.contains(&take.seg_name()) {
                self.finish(&take)?;
                r.finished.push(name_of(&take.dir));
            } else {
                self.put_back(&take)?;
                r.requeued.push(study);
            }
        }
        Ok(r)
    }

    /// The study folders in the inbox (received, not yet taken).
    pub fn waiting(&self) -> Result<Vec<String>, DicomError> {
        Ok(subfolders(&self.inbox)?
            .iter()
            .map(|p| name_of(p))
            .collect())
    }

    /// Moves `inbox/<study>` to a new `work/<study>.<n>`.
    pub fn take(&self, study: &str) -> Result<Take, DicomError> {
        let from = self.inbox.join(study);
        let mut n = 1;
        let take = loop {
            let candidate = Take {
                study: study.to_string(),
                dir: self.work.join(format!("{study}.{n}")),
            };
            let take_name = name_of(&candidate.dir);
            // The outbox counts too: processed/ may have been pruned while
            // the SEG of that take is still in outbox/sent.
            let used = [&self.work, &self.processed, &self.failed]
                .iter()
                .any(|d| d.join(&take_name).exists())
                || self.outbox.contains(&candidate.seg_name());
            if !used {
                break candidate;
            }
            n += 1;
        };
        std::fs::rename(&from, &take.dir)
            .map_err(|e| io_err(&take.dir, &format!("moving {} here", from.display()), e))?;
        Ok(take)
    }

    /// Queues the take's SEG (`seg`) for sending when `deliver`, then moves
    /// the take to `processed/`. Queuing first means a kill in between
    /// leaves a take that [`Self::recover`] finishes without segmenting it
    /// again.
    pub fn complete(&self, take: &Take, seg: &Path, deliver: bool) -> Result<(), DicomError> {
        if deliver && !self.outbox.contains(&take.seg_name()) {
            self.outbox.enqueue(seg, &take.seg_name())?;
        }
        self.finish(take)
    }

    /// Moves the take to `failed/` with `error` in its `error.txt`.
    pub fn fail(&self, take: &Take, error: &str) -> Result<PathBuf, DicomError> {
        let to = self.failed.join(name_of(&take.dir));
        std::fs::rename(&take.dir, &to)
            .map_err(|e| io_err(&to, "moving a failed study here", e))?;
        let note = to.join("error.txt");
        std::fs::write(&note, format!("{error}\n")).map_err(|e| io_err(&note, "writing", e))?;
        Ok(to)
    }

    fn finish(&self, take: &Take) -> Result<(), DicomError> {
        let to = self.processed.join(name_of(&take.dir));
        std::fs::rename(&take.dir, &to).map_err(|e| io_err(&to, "moving a segmented study here", e))
    }

    /// Moves a take's instances back into `inbox/<study>` (merging with
    /// instances that arrived since).
    fn put_back(&self, take: &Take) -> Result<(), DicomError> {
        let to = self.inbox.join(&take.study);
        if !to.exists() {
            return std::fs::rename(&take.dir, &to)
                .map_err(|e| io_err(&to, "moving a study back", e));
        }
        for f in std::fs::read_dir(&take.dir).map_err(|e| io_err(&take.dir, "listing", e))? {
            let p = f.map_err(|e| io_err(&take.dir, "listing", e))?.path();
            let dst = to.join(name_of(&p));
            std::fs::rename(&p, &dst).map_err(|e| io_err(&dst, "moving an instance back", e))?;
        }
        std::fs::remove_dir(&take.dir).map_err(|e| io_err(&take.dir, "removing", e))
    }
}

/// The study folder of a take folder `<study>.<n>`.
fn study_of_take(take: &str) -> String {
    match take.rsplit_once('.') {
        Some((study, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            study.to_string()
        }
        _ => take.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, StudyStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = StudyStore::open(dir.path()).unwrap();
        (dir, s)
    }

    fn receive(s: &StudyStore, study: &str, instance: &str) {
        let d = s.inbox.join(study);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(instance), instance).unwrap();
    }

    #[test]
    fn takes_are_numbered_and_their_segs_named_apart() {
        let (dir, s) = store();
        receive(&s, "1.2.3", "a.dcm");
        let t1 = s.take("1.2.3").unwrap();
        assert_eq!(t1.seg_name(), "1.2.3.1.seg.dcm");
        let seg = dir.path().join("seg.dcm");
        std::fs::write(&seg, "SEG").unwrap();
        s.complete(&t1, &seg, true).unwrap();
        receive(&s, "1.2.3", "b.dcm");
        let t2 = s.take("1.2.3").unwrap();
        assert_eq!(t2.seg_name(), "1.2.3.2.seg.dcm");
        assert_eq!(study_of_take("1.2.3.12"), "1.2.3");
        assert!(s.processed.join("1.2.3.1/a.dcm").is_file());
    }

    #[test]
    fn recovery_removes_partial_instances_and_resumes_interrupted_takes() {
        let (dir, s) = store();
        let seg = dir.path().join("seg.dcm");
        std::fs::write(&seg, "SEG").unwrap();
        // Killed after queuing the SEG: finished without a second SEG.
        receive(&s, "1.1", "a.dcm");
        let queued = s.take("1.1").unwrap();
        s.outbox.enqueue(&seg, &queued.seg_name()).unwrap();
        // Killed while segmenting, with newer instances in the inbox.
        receive(&s, "2.2", "a.dcm");
        let _interrupted = s.take("2.2").unwrap();
        receive(&s, "2.2", "b.dcm");
        // Killed while writing an instance.
        receive(&s, "3.3", "c.dcm.part");

        let r = s.recover().unwrap();
        assert_eq!(r.partial_files_removed, 1);
        assert_eq!(r.finished, vec!["1.1.1".to_string()]);
        assert_eq!(r.requeued, vec!["2.2".to_string()]);
        assert!(s.processed.join("1.1.1/a.dcm").is_file());
        assert!(s.inbox.join("2.2/a.dcm").is_file() && s.inbox.join("2.2/b.dcm").is_file());
        assert!(!s.inbox.join("3.3/c.dcm.part").exists());
        assert_eq!(s.outbox.pending().unwrap().len(), 1);
        assert!(subfolders(&s.work).unwrap().is_empty());
        // Completing a take whose SEG is already queued queues nothing more.
        let t = s.take("2.2").unwrap();
        s.outbox.enqueue(&seg, &t.seg_name()).unwrap();
        s.complete(&t, &seg, true).unwrap();
        assert_eq!(s.outbox.pending().unwrap().len(), 2);
        assert!(s.processed.join("2.2.1/b.dcm").is_file());
    }
}
