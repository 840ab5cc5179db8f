//! clisc as a DICOM node against a real PACS (Debian's Orthanc, started on
//! loopback with a configuration written to a temporary folder).
//!
//! 1. pull / infer / push: a generated two-series study is uploaded to
//!    Orthanc (REST), `clisc dicom pull` finds it (C-FIND) and retrieves it
//!    (C-MOVE to clisc's own storage SCP), `clisc infer` segments it,
//!    `clisc dicom push` stores the SEG (C-STORE); Orthanc then holds the
//!    SEG in the same study, and the SEG it returns equals the local
//!    result voxel for voxel (highdicom/pydicom reader).
//! 2. serve, with a lab's own network (the example cdylib
//!    `example-threshold-segmenter`, `--plugin-path`): `clisc dicom serve`
//!    refuses unknown calling AE titles and a
//!    wrong called AE title (DCMTK's echoscu), reports and skips a
//!    malformed instance (storescu), receives a second study that Orthanc
//!    sends it, segments it, and sends the SEG to Orthanc, which is
//!    stopped when the SEG is ready: the SEG stays in the outbox, is
//!    retried, and arrives once Orthanc is back.
//!
//! Needs `orthanc` and `dcmtk` (`scripts/ci-deps.sh`) and `$CLISC_PYTHON`.
//! If Orthanc cannot start, the test fails and says why.

#[path = "support/dicom_e2e.rs"]
mod dicom_e2e;

use dicom_e2e::{
    assert_seg_matches, case_flair, check_seg, clisc, make_study, train_external_model,
    train_model, CLI,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PACS_AE: &str = "ORTHANC";
const NODE_AE: &str = "CLISC";

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Minimal HTTP/1.0 client for Orthanc's REST API: `(status, body)`.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head}")))?;
    Ok((status, raw[split + 4..].to_vec()))
}

fn rest_json(port: u16, method: &str, path: &str, body: &[u8]) -> serde_json::Value {
    let (status, body) = http(port, method, path, body)
        .unwrap_or_else(|e| panic!("Orthanc REST {method} {path}: {e}"));
    assert!(
        (200..300).contains(&status),
        "Orthanc REST {method} {path}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
}

/// An Orthanc server on loopback; killed when dropped.
struct Orthanc {
    child: Option<Child>,
    dir: PathBuf,
    http_port: u16,
    dicom_port: u16,
    node_port: u16,
}

impl Orthanc {
    /// Writes the configuration (DICOM and HTTP ports, AE title, the clisc
    /// node as a modality for C-MOVE) and starts Orthanc.
    fn start(dir: &Path, node_port: u16) -> Self {
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let (http_port, dicom_port) = (free_port(), free_port());
        let config = serde_json::json!({
            "Name": "clisc-test",
            "StorageDirectory": dir.join("db"),
            "IndexDirectory": dir.join("db"),
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": PACS_AE,
            "DicomCheckCalledAet": true,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": [],
            "DicomScuTimeout": 10,
            "DicomModalities": { "clisc": [NODE_AE, "127.0.0.1", node_port] },
        });
        std::fs::write(dir.join("orthanc.json"), config.to_string()).unwrap();
        let mut o = Self {
            child: None,
            dir: dir.to_path_buf(),
            http_port,
            dicom_port,
            node_port,
        };
        o.launch();
        o
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("orthanc.log")).unwrap();
        let child = Command::new(orthanc_binary())
            .arg(self.dir.join("orthanc.json"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start Orthanc (`Orthanc` from Debian's `orthanc` package; install the \
                     test tools with scripts/ci-deps.sh): {e}"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http(self.http_port, "GET", "/system", b"") {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "Orthanc exited ({status}) before serving HTTP on port {}; its log:\n{}",
                    self.http_port,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Orthanc did not answer on HTTP port {} within 30 s; its log:\n{}",
                self.http_port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("orthanc.log")).unwrap_or_default()
    }

    /// Stops Orthanc (SIGTERM, then waits); its database stays.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn peer(&self) -> String {
        format!("{PACS_AE}@127.0.0.1:{}", self.dicom_port)
    }

    /// Uploads every file under `dir` (REST POST /instances).
    fn upload(&self, dir: &Path) -> usize {
        let mut n = 0;
        for f in files_under(dir) {
            let v = rest_json(
                self.http_port,
                "POST",
                "/instances",
                &std::fs::read(&f).unwrap(),
            );
            assert_eq!(v["Status"], "Success", "{}: {v}", f.display());
            n += 1;
        }
        n
    }

    /// The SEG instances Orthanc holds in study `study_uid`, with their tags.
    fn seg_instances(&self, study_uid: &str) -> Vec<serde_json::Value> {
        let query = serde_json::json!({
            "Level": "Instance",
            "Query": { "StudyInstanceUID": study_uid, "Modality": "SEG" },
            "Expand": true
        });
        let found = rest_json(
            self.http_port,
            "POST",
            "/tools/find",
            query.to_string().as_bytes(),
        );
        found.as_array().cloned().unwrap_or_default()
    }

    /// Orthanc's ID of the study an instance (from [`Self::seg_instances`]) is filed under.
    fn parent_study(&self, instance: &serde_json::Value) -> String {
        let id = instance["ID"].as_str().unwrap();
        let study = rest_json(
            self.http_port,
            "GET",
            &format!("/instances/{id}/study"),
            b"",
        );
        study["ID"].as_str().unwrap().to_string()
    }

    fn orthanc_study_id(&self, study_uid: &str) -> String {
        let query =
            serde_json::json!({ "Level": "Study", "Query": { "StudyInstanceUID": study_uid } });
        let found = rest_json(
            self.http_port,
            "POST",
            "/tools/find",
            query.to_string().as_bytes(),
        );
        found[0]
            .as_str()
            .unwrap_or_else(|| panic!("Orthanc has no study {study_uid}: {found}"))
            .to_string()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Debian installs Orthanc in /usr/sbin, which a non-root PATH may lack.
fn orthanc_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/Orthanc");
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("Orthanc").is_file()))
        .unwrap_or(false);
    if in_path || !sbin.is_file() {
        PathBuf::from("Orthanc")
    } else {
        sbin
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Downloads instance `id` from Orthanc into `path`.
fn download(orthanc: &Orthanc, id: &str, path: &Path) {
    let (status, body) = http(
        orthanc.http_port,
        "GET",
        &format!("/instances/{id}/file"),
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    std::fs::write(path, body).unwrap();
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A DCMTK tool's exit status and output.
fn dcmtk(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (dcmtk, scripts/ci-deps.sh): {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn pull_segment_push_and_serve_against_orthanc() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = train_model(root);
    let model = model.to_str().unwrap();
    let node_port = free_port();
    let mut orthanc = Orthanc::start(&root.join("orthanc"), node_port);
    let node_listen = format!("127.0.0.1:{}", orthanc.node_port);
    let pacs = orthanc.peer();

    // ---- 1. pull, infer, push.
    let study_a = make_study(
        &case_flair(root, 3),
        &root.join("upload-a"),
        "1.2.826.0.1.3680043.8.498.88001",
        "PAT-A",
    );
    let uid_a = study_a["study_uid"].as_str().unwrap();
    let uploaded = orthanc.upload(&root.join("upload-a"));
    assert_eq!(uploaded, 48, "two series of 24 slices");
    let pulled = root.join("pulled");
    let out = clisc(&[
        "--quiet",
        "dicom",
        "pull",
        "--ae-title",
        NODE_AE,
        "--from",
        &pacs,
        "--listen",
        &node_listen,
        "--patient-id",
        "PAT-A",
        "--out",
        pulled.to_str().unwrap(),
    ]);
    assert!(out.contains(&format!("study {uid_a}")), "{out}");
    let pulled_files = files_under(&pulled.join(uid_a));
    assert_eq!(pulled_files.len(), 48, "{out}");
    let segs = root.join("segs");
    clisc(&[
        "--quiet",
        "infer",
        "--model",
        model,
        "--input",
        pulled.to_str().unwrap(),
        "--out",
        segs.to_str().unwrap(),
        "--nifti",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]);
    let seg_a = segs.join(uid_a).join("seg.dcm");
    let out = clisc(&[
        "--quiet",
        "dicom",
        "push",
        "--ae-title",
        NODE_AE,
        "--to",
        &pacs,
        seg_a.to_str().unwrap(),
    ]);
    assert!(out.contains("1 file(s) sent"), "{out}");
    let held = orthanc.seg_instances(uid_a);
    assert_eq!(
        held.len(),
        1,
        "Orthanc's SEG instances in study A: {held:?}"
    );
    assert_eq!(
        orthanc.parent_study(&held[0]),
        orthanc.orthanc_study_id(uid_a)
    );
    let back_a = root.join("back-a.dcm");
    download(&orthanc, held[0]["ID"].as_str().unwrap(), &back_a);
    let v = check_seg(&back_a, &segs.join(uid_a).join("seg.nii.gz"), &pulled);
    assert_seg_matches(&v, &study_a);
    let held_a_voxels = v["seg_voxels"].clone();

    // ---- 2. serve, with a lab's own network: the example cdylib
    // `example-threshold-segmenter`, found through --plugin-path.
    let external_root = root.join("external");
    std::fs::create_dir_all(&external_root).unwrap();
    let (library, external_model) = train_external_model(&external_root);
    let (library, model) = (library.to_str().unwrap(), external_model.to_str().unwrap());
    let storage = root.join("node");
    let log = std::fs::File::create(root.join("serve.log")).unwrap();
    let mut serve = Command::new(CLI)
        .args([
            "dicom",
            "serve",
            "--ae-title",
            NODE_AE,
            "--listen",
            &node_listen,
            "--allow",
            PACS_AE,
            "--model",
            model,
            "--plugin-path",
            library,
            "--storage",
            storage.to_str().unwrap(),
            "--destination",
            &pacs,
            "--settle",
            "3",
            "--retry-delay",
            "1",
            "--max-studies",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let serve_log = || std::fs::read_to_string(root.join("serve.log")).unwrap_or_default();
    let port = node_port.to_string();
    wait_for(
        "clisc dicom serve to listen",
        Duration::from_secs(60),
        || serve_log().contains("listening on"),
    );
    // Only configured callers, only this node's AE title.
    let (ok, text) = dcmtk(
        "echoscu",
        &["-aet", PACS_AE, "-aec", NODE_AE, "127.0.0.1", &port],
    );
    assert!(ok, "C-ECHO from the allowed caller failed: {text}");
    let (ok, text) = dcmtk(
        "echoscu",
        &["-aet", "INTRUDER", "-aec", NODE_AE, "127.0.0.1", &port],
    );
    assert!(!ok, "an unknown calling AE title was accepted: {text}");
    let (ok, text) = dcmtk(
        "echoscu",
        &["-aet", PACS_AE, "-aec", "NOTCLISC", "127.0.0.1", &port],
    );
    assert!(!ok, "a wrong called AE title was accepted: {text}");
    // A malformed instance (no StudyInstanceUID) is reported and skipped.
    let bad = root.join("bad.dcm");
    let script = "import sys, pydicom; from pydicom.uid import generate_uid, ExplicitVRLittleEndian\n\
        ds = pydicom.dcmread(sys.argv[1]); del ds.StudyInstanceUID\n\
        ds.SOPInstanceUID = generate_uid(); ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID\n\
        ds.save_as(sys.argv[2])";
    let st = Command::new(dicom_e2e::python())
        .args([
            "-c",
            script,
            pulled_files[0].to_str().unwrap(),
            bad.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let (_, text) = dcmtk(
        "storescu",
        &[
            "-aet",
            PACS_AE,
            "-aec",
            NODE_AE,
            "127.0.0.1",
            &port,
            bad.to_str().unwrap(),
        ],
    );
    wait_for(
        "the malformed instance to be reported",
        Duration::from_secs(10),
        || serve_log().contains("not stored: the data set has no StudyInstanceUID"),
    );
    assert!(
        !files_under(&storage.join("inbox"))
            .iter()
            .any(|p| p.is_file()),
        "the malformed instance was stored (storescu said: {text})"
    );

    // Orthanc sends study B to the node; Orthanc is stopped before the SEG
    // can go back, then restarted: the SEG waits in the outbox meanwhile.
    let study_b = make_study(
        &case_flair(root, 5),
        &root.join("upload-b"),
        "1.2.826.0.1.3680043.8.498.88002",
        "PAT-B",
    );
    let uid_b = study_b["study_uid"].as_str().unwrap();
    orthanc.upload(&root.join("upload-b"));
    let id_b = orthanc.orthanc_study_id(uid_b);
    let job = rest_json(
        orthanc.http_port,
        "POST",
        "/modalities/clisc/store",
        id_b.as_bytes(),
    );
    assert!(job.is_object(), "{job}");
    orthanc.stop();
    let pending = storage.join("outbox/pending");
    wait_for(
        "the SEG of study B in the outbox",
        Duration::from_secs(60),
        || {
            std::fs::read_dir(&pending)
                .map(|d| d.count() > 0)
                .unwrap_or(false)
        },
    );
    wait_for("a failed send", Duration::from_secs(30), || {
        serve_log().contains("not delivered to")
    });
    assert_eq!(
        std::fs::read_dir(&pending).unwrap().count(),
        1,
        "{}",
        serve_log()
    );
    orthanc.launch();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = serve.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = serve.kill();
            panic!("clisc dicom serve did not finish:\n{}", serve_log());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "clisc dicom serve failed:\n{}",
        serve_log()
    );
    assert_eq!(std::fs::read_dir(&pending).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(storage.join("outbox/sent"))
            .unwrap()
            .count(),
        1
    );
    let held = orthanc.seg_instances(uid_b);
    assert_eq!(
        held.len(),
        1,
        "Orthanc's SEG instances in study B: {held:?}\n{}",
        serve_log()
    );
    assert_eq!(orthanc.parent_study(&held[0]), id_b);
    let back_b = root.join("back-b.dcm");
    download(&orthanc, held[0]["ID"].as_str().unwrap(), &back_b);
    // Reference for B: clisc infer on what the node received.
    let received_b = files_under(&storage.join("processed"));
    assert_eq!(received_b.len(), 48, "{}", serve_log());
    let ref_b = root.join("ref-b");
    clisc(&[
        "--quiet",
        "infer",
        "--model",
        model,
        "--plugin-path",
        library,
        "--input",
        storage.join("processed").to_str().unwrap(),
        "--out",
        ref_b.to_str().unwrap(),
        "--nifti",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]);
    let v = check_seg(
        &back_b,
        &ref_b.join(uid_b).join("seg.nii.gz"),
        &storage.join("processed"),
    );
    assert_seg_matches(&v, &study_b);
    eprintln!(
        "Orthanc holds the SEGs: study A {} voxels (pull/infer/push), study B {} voxels (serve, delivered after a retry)",
        held_a_voxels, v["seg_voxels"]
    );
}
