//! The DICOM node over TLS: a storage SCP with a server certificate accepts
//! C-ECHO and C-STORE from a client whose certificate its CA signed, and
//! refuses plain TCP, a client certificate from another CA, and a client
//! that does not trust the server's CA. Certificates are made with the
//! `openssl` command (P-256 keys, IP name 127.0.0.1).

use clisc_dicom_node::net::{self, Peer};
use clisc_dicom_node::scp::StoreScp;
use clisc_dicom_node::tls::{self, TlsFiles};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA `<name>-ca.pem` / `<name>-ca.key` in `dir`.
fn authority(dir: &Path, name: &str) {
    let (pem, key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate for `name` (IP 127.0.0.1) signed by CA `ca`; returns the
/// node's files with `trust` as the CA it accepts peers from.
fn node(dir: &Path, name: &str, ca: &str, trust: &str) -> TlsFiles {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}-ca.pem"),
            "-CAkey",
            &format!("{ca}-ca.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
    TlsFiles {
        cert: dir.join(pem),
        key: dir.join(key),
        ca: dir.join(format!("{trust}-ca.pem")),
    }
}

/// A small MR instance of study `2.25.4711`.
fn instance(path: &Path) {
    let mut obj = InMemDicomObject::new_empty();
    let mr = "1.2.840.10008.5.1.4.1.1.4";
    let put = |o: &mut InMemDicomObject, tag, vr, v: &str| {
        o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    };
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, mr);
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, "2.25.4711.1");
    put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, "2.25.4711");
    put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, "2.25.4711.2");
    put(&mut obj, tags::MODALITY, VR::CS, "MR");
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax("1.2.840.10008.1.2.1")
            .media_storage_sop_class_uid(mr)
            .media_storage_sop_instance_uid("2.25.4711.1"),
    )
    .unwrap()
    .write_to_file(path)
    .unwrap();
}

#[test]
fn the_node_talks_tls_only_with_peers_of_its_authority() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    authority(dir, "site");
    authority(dir, "rogue");
    let server = node(dir, "server", "site", "site");
    let client = node(dir, "client", "site", "site");
    let rogue = node(dir, "rogue-client", "rogue", "site");
    let trusts_rogue = node(dir, "naive-client", "site", "rogue");

    let inbox = dir.join("inbox");
    let scp = StoreScp::new("CLISC", vec!["SENDER".into()], inbox.clone())
        .with_tls(Some(tls::server_config(&server).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stored = Arc::new(Mutex::new(Vec::new()));
    let serving = {
        let (stop, stored) = (stop.clone(), stored.clone());
        std::thread::spawn(move || {
            scp.serve(
                listener,
                stop,
                Arc::new(move |i| stored.lock().unwrap().push(i)),
            )
        })
    };
    let peer: Peer = format!("CLISC@127.0.0.1:{port}").parse().unwrap();
    let with = |files: &TlsFiles| {
        peer.clone()
            .with_tls(Some(tls::client_config(files).unwrap()))
    };

    // Signed by the site CA, trusting it: echo and store work.
    net::echo("SENDER", &with(&client)).expect("C-ECHO over TLS");
    let file: PathBuf = dir.join("mr.dcm");
    instance(&file);
    let outcomes = net::store_files("SENDER", &with(&client), std::slice::from_ref(&file)).unwrap();
    assert!(outcomes[0].result.is_ok(), "{:?}", outcomes[0].result);
    let received = stored.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].study_uid, "2.25.4711");
    let data_set = |p: &Path| dicom_object::open_file(p).unwrap().into_inner();
    assert!(
        data_set(&received[0].path) == data_set(&file),
        "the data set arrives unchanged (the file meta group is the receiver's)"
    );

    // Everyone else is refused, and nothing more is stored.
    let refused = [
        ("plain TCP", peer.clone()),
        ("a client certificate from another CA", with(&rogue)),
        (
            "a client that does not trust the server's CA",
            with(&trusts_rogue),
        ),
    ];
    for (who, p) in refused {
        let e = net::echo("SENDER", &p).expect_err(who);
        assert!(
            e.to_string()
                .contains("cannot associate with CLISC@127.0.0.1"),
            "{who}: {e}"
        );
    }
    assert_eq!(stored.lock().unwrap().len(), 1);
    stop.store(true, Ordering::SeqCst);
    serving.join().unwrap().unwrap();
}
