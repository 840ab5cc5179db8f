//! The node's storage service (SCP): [`StoreScp`] accepts associations
//! only from configured calling AE titles addressed to its own AE title,
//! answers C-ECHO, and writes every received instance to
//! `<inbox>/<StudyInstanceUID>/<SOPInstanceUID>.dcm` (names made safe with
//! [`clisc_dicom::safe_file_name`]), synced to disk before it is
//! acknowledged. An instance that cannot be parsed, or has no
//! StudyInstanceUID, is reported, answered with a failure status and not
//! stored; the association goes on. [`ScpLimits`] bound what peers can
//! take: associations at once, studies waiting, and how long a silent
//! peer keeps its association.

use crate::net::{
    error_chain, receive_message, response, send_message, text_of, NetError, C_ECHO_RQ, C_ECHO_RSP,
    C_STORE_RQ, C_STORE_RSP, IMPLEMENTATION_CLASS_UID, STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS, STATUS_UNRECOGNIZED_OPERATION, VERIFICATION,
};
use clisc_dicom::safe_file_name;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::mem::InMemDicomObject;
use dicom_object::FileMetaTableBuilder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::AccessControl;
use dicom_ul::association::CloseSocket;
use dicom_ul::pdu::AssociationRJServiceUserReason;
use dicom_ul::ServerAssociationOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the node turned a connection or a study away before serving it.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// The socket's read timeout could not be set.
    #[error("{0}")]
    Socket(std::io::Error),
    /// A TLS client reached a plain-TCP node.
    #[error("a TLS client connected to this plain-TCP node (start it with --tls-cert, --tls-key, --tls-ca)")]
    TlsOnPlainNode,
    /// The first byte is not an A-ASSOCIATE-RQ.
    #[error("expected an A-ASSOCIATE-RQ (PDU type 0x01), the peer sent a byte 0x{0:02X}")]
    NotAnAssociateRequest(u8),
    /// The first byte on a TLS node is not a handshake record.
    #[error(
        "expected a TLS handshake record (0x16) on this TLS node, the peer sent a byte 0x{0:02X}"
    )]
    NotATlsHandshake(u8),
    /// The peer closed the connection before `what`.
    #[error("the peer closed the connection before {0}")]
    ClosedBefore(&'static str),
    /// Nothing arrived within the idle timeout.
    #[error("no {what} within {seconds:.0} s (--idle-timeout): {error}")]
    Silent {
        /// What was awaited.
        what: &'static str,
        /// The idle timeout.
        seconds: f64,
        /// The read's error.
        error: std::io::Error,
    },
    /// The client hello kept arriving in pieces past the idle timeout.
    #[error("the TLS client hello did not arrive whole within {0:.0} s (--idle-timeout)")]
    PartialClientHello(f64),
    /// As many studies wait in the inbox as the node allows.
    #[error("{waiting} studies are waiting in {} (the limit); send this study again later", .inbox.display())]
    InboxFull {
        /// Studies waiting.
        waiting: usize,
        /// The inbox.
        inbox: PathBuf,
    },
    /// The study's folder could not be created.
    #[error("creating {}: {error}", .dir.display())]
    StudyFolder {
        /// The folder.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// Accepts an association only when it is addressed to this node's AE
/// title and comes from one of the allowed calling AE titles.
#[derive(Debug, Clone)]
pub(crate) struct AllowedCallers(pub Vec<String>);

impl AccessControl for AllowedCallers {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&dicom_ul::pdu::UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let t = |s: &str| s.trim_end_matches(['\0', ' ']).trim_start().to_string();
        if t(called_ae_title) != t(this_ae_title) {
            tracing::warn!(
                "refused an association from `{}` addressed to `{}` (this node is `{}`)",
                t(calling_ae_title),
                t(called_ae_title),
                t(this_ae_title)
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.0.iter().any(|a| t(a) == t(calling_ae_title)) {
            tracing::warn!(
                "refused an association from `{}`: not among the allowed callers {:?}",
                t(calling_ae_title),
                self.0
            );
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// An instance a [`StoreScp`] received and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    /// The calling AE title.
    pub from: String,
    /// StudyInstanceUID.
    pub study_uid: String,
    /// SOPInstanceUID.
    pub sop_instance_uid: String,
    /// The file written.
    pub path: PathBuf,
}

/// A storage SCP (plus verification): see the module documentation.
#[derive(Debug, Clone)]
pub struct StoreScp {
    /// This node's AE title.
    pub ae_title: String,
    /// Calling AE titles allowed to associate.
    pub allowed_callers: Vec<String>,
    /// Where received instances go (`<inbox>/<study>/<instance>.dcm`).
    pub inbox: PathBuf,
    /// Accept only TLS connections with this configuration (plain TCP when `None`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bounds on what peers can take.
    pub limits: ScpLimits,
    /// Held while an instance of a new study is admitted, so that
    /// concurrent associations cannot both take the last free place.
    admission: Arc<Mutex<()>>,
}

/// Bounds that keep busy or hostile peers from exhausting the node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScpLimits {
    /// Associations served at once; a further one is rejected
    /// (A-ASSOCIATE-RJ: rejected-transient, service provider, local limit
    /// exceeded; over TLS the connection is closed), and the peer may try
    /// again later.
    pub max_associations: usize,
    /// Studies waiting in the inbox (being received or waiting to be
    /// segmented); an instance of a further study is answered with status
    /// 0xA700 (out of resources) and not stored.
    pub max_waiting_studies: usize,
    /// An association that sends nothing for this long (stalled mid-PDU,
    /// or connected and silent) is dropped; other associations go on.
    pub idle_timeout: Duration,
}

impl Default for ScpLimits {
    fn default() -> Self {
        Self {
            max_associations: 32,
            max_waiting_studies: 200,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl StoreScp {
    /// A plain-TCP storage service for `ae_title`, accepting `allowed_callers`,
    /// writing into `inbox`, with the default [`ScpLimits`].
    pub fn new(ae_title: &str, allowed_callers: Vec<String>, inbox: PathBuf) -> Self {
        Self {
            ae_title: ae_title.to_string(),
            allowed_callers,
            inbox,
            tls: None,
            limits: ScpLimits::default(),
            admission: Arc::new(Mutex::new(())),
        }
    }

    /// Accepts only TLS connections with `tls` (plain TCP when `None`).
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = tls;
        self
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: ScpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Accepts associations on `listener` until `stop` is set (checked
    /// every 100 ms), each association in its own thread; `on_stored` is
    /// called for every instance written. Returns when stopped, after the
    /// running associations ended.
    pub fn serve(
        &self,
        listener: TcpListener,
        stop: Arc<AtomicBool>,
        on_stored: Arc<dyn Fn(StoredInstance) + Send + Sync>,
    ) -> Result<(), NetError> {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        listener
            .set_nonblocking(true)
            .map_err(|e| NetError::Protocol {
                peer: addr.clone(),
                message: format!("listener: {e}"),
            })?;
        let mut workers = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            workers.retain(|w: &std::thread::JoinHandle<()>| !w.is_finished());
            match listener.accept() {
                Ok((stream, from)) if workers.len() >= self.limits.max_associations => {
                    tracing::warn!(
                        "rejected an association from {from}: {} associations are open (the limit)",
                        workers.len()
                    );
                    let tls = self.tls.is_some();
                    std::thread::spawn(move || reject_busy(stream, tls));
                }
                Ok((stream, from)) => {
                    let scp = self.clone();
                    let on_stored = on_stored.clone();
                    workers.push(std::thread::spawn(move || {
                        if let Err(e) = scp.handle(stream, &*on_stored) {
                            tracing::warn!("association from {from}: {e}");
                        }
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => tracing::warn!("accepting a connection on {addr}: {e}"),
            }
            workers.retain(|w| !w.is_finished());
        }
        for w in workers {
            let _ = w.join();
        }
        Ok(())
    }

    /// Handles one association on `stream` until the peer releases it.
    pub fn handle(
        &self,
        stream: TcpStream,
        on_stored: &dyn Fn(StoredInstance),
    ) -> Result<(), NetError> {
        let peer_addr = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let perr = |e: &dyn std::fmt::Display| NetError::Protocol {
            peer: peer_addr.clone(),
            message: e.to_string(),
        };
        stream.set_nonblocking(false).map_err(|e| perr(&e))?;
        let options = ServerAssociationOptions::new()
            .ae_access_control(AllowedCallers(self.allowed_callers.clone()))
            .ae_title(self.ae_title.clone())
            .promiscuous(true)
            .read_timeout(self.limits.idle_timeout)
            .write_timeout(self.limits.idle_timeout.max(Duration::from_secs(30)));
        let associate = |e: dicom_ul::association::Error| NetError::Associate {
            peer: peer_addr.clone(),
            message: error_chain(&e),
        };
        match &self.tls {
            None => {
                self.await_associate_request(&stream)
                    .map_err(|e| perr(&e))?;
                let mut assoc = options.establish(stream).map_err(associate)?;
                self.converse(&mut assoc, &peer_addr, on_stored)
            }
            Some(tls) => {
                self.await_client_hello(&stream).map_err(|e| perr(&e))?;
                let mut assoc = options
                    .tls_config(tls.clone())
                    .establish_tls(stream)
                    .map_err(associate)?;
                self.converse(&mut assoc, &peer_addr, on_stored)
            }
        }
    }

    /// Waits (at most `idle_timeout`) for the first byte of a plain-TCP
    /// connection and checks that it starts an A-ASSOCIATE-RQ. dicom-ul
    /// 0.10.1 (with its `sync-tls` feature) must not see a connection
    /// that sends nothing: after its read times out it looks for a TLS
    /// client hello in the empty buffer and spins there for ever.
    fn await_associate_request(&self, stream: &TcpStream) -> Result<(), Refusal> {
        stream
            .set_read_timeout(Some(self.limits.idle_timeout))
            .map_err(Refusal::Socket)?;
        let mut first = [0u8; 1];
        match stream.peek(&mut first) {
            Ok(1) if first[0] == 0x01 => Ok(()),
            Ok(1) if first[0] == 0x16 => Err(Refusal::TlsOnPlainNode),
            Ok(1) => Err(Refusal::NotAnAssociateRequest(first[0])),
            Ok(_) => Err(Refusal::ClosedBefore("associating")),
            Err(error) => Err(Refusal::Silent {
                what: "A-ASSOCIATE-RQ",
                seconds: self.limits.idle_timeout.as_secs_f64(),
                error,
            }),
        }
    }

    /// Waits (at most `idle_timeout`) until a whole TLS record has arrived
    /// and checks that it is a handshake record. dicom-ul 0.10.1 must not
    /// start a TLS handshake on a connection that closes or stalls before
    /// its client hello is complete: rustls' acceptor then reads nothing
    /// and dicom-ul asks it again, for ever.
    fn await_client_hello(&self, stream: &TcpStream) -> Result<(), Refusal> {
        stream
            .set_read_timeout(Some(self.limits.idle_timeout))
            .map_err(Refusal::Socket)?;
        let start = std::time::Instant::now();
        let mut buf = vec![0u8; 5 + (1 << 14)];
        loop {
            let n = stream.peek(&mut buf).map_err(|error| Refusal::Silent {
                what: "TLS client hello",
                seconds: self.limits.idle_timeout.as_secs_f64(),
                error,
            })?;
            if n == 0 {
                return Err(Refusal::ClosedBefore("its TLS client hello"));
            }
            if buf[0] != 0x16 {
                return Err(Refusal::NotATlsHandshake(buf[0]));
            }
            if n >= 5 && n >= 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]])) {
                return Ok(());
            }
            if start.elapsed() >= self.limits.idle_timeout {
                return Err(Refusal::PartialClientHello(
                    self.limits.idle_timeout.as_secs_f64(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Answers the requests of one established association until the peer
    /// releases it.
    fn converse<S: Read + Write + CloseSocket>(
        &self,
        assoc: &mut dicom_ul::ServerAssociation<S>,
        peer_addr: &str,
        on_stored: &dyn Fn(StoredInstance),
    ) -> Result<(), NetError> {
        let perr = |e: crate::net::LinkError| NetError::Protocol {
            peer: peer_addr.to_string(),
            message: e.to_string(),
        };
        let caller = dicom_ul::association::Association::peer_ae_title(assoc)
            .trim()
            .to_string();
        let contexts = assoc.presentation_contexts().to_vec();
        loop {
            let m = match receive_message(assoc) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => return Err(perr(e)),
            };
            let field = m.u16(tags::COMMAND_FIELD).unwrap_or(0);
            let reply = match field {
                C_ECHO_RQ => response(C_ECHO_RSP, &m, STATUS_SUCCESS, Some(VERIFICATION), None),
                C_STORE_RQ => {
                    let sop_class = m.text(tags::AFFECTED_SOP_CLASS_UID).unwrap_or_default();
                    let sop_instance = m.text(tags::AFFECTED_SOP_INSTANCE_UID).unwrap_or_default();
                    let syntax = contexts
                        .iter()
                        .find(|pc| pc.id == m.context_id)
                        .map(|pc| pc.transfer_syntax.trim_end_matches('\0').to_string())
                        .unwrap_or_default();
                    let status = match self.store(
                        &caller,
                        &sop_class,
                        &sop_instance,
                        &syntax,
                        m.data.as_deref(),
                    ) {
                        Ok(stored) => {
                            tracing::info!(
                                "received {} from {caller} (study {})",
                                stored.path.display(),
                                stored.study_uid
                            );
                            on_stored(stored);
                            STATUS_SUCCESS
                        }
                        Err((status, why)) => {
                            tracing::error!(
                                "instance {sop_instance} from {caller} not stored: {why}"
                            );
                            status
                        }
                    };
                    response(
                        C_STORE_RSP,
                        &m,
                        status,
                        Some(&sop_class),
                        Some(&sop_instance),
                    )
                }
                other => {
                    tracing::warn!(
                        "{caller} sent DIMSE command 0x{other:04X}, which this node does not serve"
                    );
                    response(
                        other | 0x8000,
                        &m,
                        STATUS_UNRECOGNIZED_OPERATION,
                        None,
                        None,
                    )
                }
            };
            send_message(assoc, m.context_id, &reply, None).map_err(perr)?;
        }
    }

    /// Creates the study folder `dir` unless that would exceed
    /// `max_waiting_studies`; the reason when not.
    fn admit(&self, dir: &std::path::Path) -> Result<(), Refusal> {
        if dir.is_dir() {
            return Ok(());
        }
        let _held = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        if !dir.is_dir() {
            let waiting = std::fs::read_dir(&self.inbox)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.path().is_dir())
                        .count()
                })
                .unwrap_or(0);
            if waiting >= self.limits.max_waiting_studies {
                return Err(Refusal::InboxFull {
                    waiting,
                    inbox: self.inbox.clone(),
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(|error| Refusal::StudyFolder {
            dir: dir.to_path_buf(),
            error,
        })
    }

    /// Parses and writes one received instance; on failure the DIMSE status
    /// to answer and the reason.
    fn store(
        &self,
        caller: &str,
        sop_class: &str,
        sop_instance: &str,
        syntax: &str,
        data: Option<&[u8]>,
    ) -> Result<StoredInstance, (u16, String)> {
        let bad = |m: String| (STATUS_CANNOT_UNDERSTAND, m);
        let data = data.ok_or_else(|| bad("C-STORE without a data set".into()))?;
        let ts = TransferSyntaxRegistry
            .get(syntax)
            .ok_or_else(|| bad(format!("unknown transfer syntax `{syntax}`")))?;
        let obj = InMemDicomObject::read_dataset_with_ts(data, ts)
            .map_err(|e| bad(format!("the data set cannot be parsed: {e}")))?;
        let study_uid = text_of(&obj, tags::STUDY_INSTANCE_UID);
        if study_uid.is_empty() {
            return Err(bad("the data set has no StudyInstanceUID".into()));
        }
        let own_instance = text_of(&obj, tags::SOP_INSTANCE_UID);
        if sop_instance.is_empty() || own_instance != sop_instance {
            return Err(bad(format!(
                "AffectedSOPInstanceUID `{sop_instance}` differs from the data set's SOPInstanceUID `{own_instance}`"
            )));
        }
        let dir = self.inbox.join(safe_file_name(&study_uid));
        let path = dir.join(format!("{}.dcm", safe_file_name(sop_instance)));
        let fail = |m: String| (STATUS_OUT_OF_RESOURCES, m);
        self.admit(&dir).map_err(|e| fail(e.to_string()))?;
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(sop_class)
            .media_storage_sop_instance_uid(sop_instance)
            .transfer_syntax(syntax)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name("CLISC")
            .build()
            .map_err(|e| fail(format!("file meta group: {e}")))?;
        // A name of its own per write: the same instance may arrive on two
        // associations at once.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let write_id = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!(
            "dcm.{}-{write_id}{}",
            std::process::id(),
            crate::studies::PART_SUFFIX
        ));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            f.write_all(&[0u8; 128])?;
            f.write_all(b"DICM")?;
            meta.write(&mut f).map_err(std::io::Error::other)?;
            f.write_all(data)?;
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            // Nothing half-written stays behind for a restart to take.
            let _ = std::fs::remove_file(&tmp);
            fail(format!("writing {}: {e}", path.display()))
        })?;
        Ok(StoredInstance {
            from: caller.to_string(),
            study_uid,
            sop_instance_uid: sop_instance.to_string(),
            path,
        })
    }
}

/// Answers a connection past `max_associations`: reads the peer's
/// A-ASSOCIATE-RQ (for at most 5 s) and rejects it as transient, local
/// limit exceeded; a TLS connection is just closed.
fn reject_busy(mut stream: TcpStream, tls: bool) {
    use dicom_ul::pdu::{
        AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
        AssociationRJSource,
    };
    if tls {
        return;
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut header = [0u8; 6];
    if stream.read_exact(&mut header).is_err() || header[0] != 0x01 {
        return;
    }
    let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as u64;
    if std::io::copy(
        &mut (&mut stream).take(length.min(1 << 20)),
        &mut std::io::sink(),
    )
    .is_err()
    {
        return;
    }
    let rj = dicom_ul::Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut bytes = Vec::new();
    if dicom_ul::write_pdu(&mut bytes, &rj).is_ok() {
        let _ = stream.write_all(&bytes);
        let _ = stream.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_control_needs_both_titles() {
        let a = AllowedCallers(vec!["PACS".into()]);
        assert!(a.check_access("CLISC", "PACS", "CLISC", None).is_ok());
        assert!(a.check_access("CLISC", "PACS ", "CLISC ", None).is_ok());
        assert_eq!(
            a.check_access("CLISC", "INTRUDER", "CLISC", None),
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        );
        assert_eq!(
            a.check_access("CLISC", "PACS", "OTHER", None),
            Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized)
        );
    }
}
