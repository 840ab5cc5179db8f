//! DICOM networking (DIMSE over `dicom-ul` associations): the services a
//! clisc node needs to work with a PACS.
//!
//! * SCU side: C-ECHO ([`echo`]), C-STORE of files ([`store_files`]),
//!   study-level C-FIND ([`find_studies`]) and C-MOVE ([`move_study`]) in the
//!   Study Root query/retrieve model.
//! * SCP side: the storage service is [`crate::scp`]; this module holds
//!   the message layer both sides share.
//!
//! Both sides can run over TLS ([`super::tls`]): a [`Peer`] with a client
//! configuration connects with TLS, a [`crate::scp::StoreScp`] with a server
//! configuration accepts only TLS connections from peers whose certificate
//! its CA signed.
//!
//! `dicom-ul` provides the association and PDU layers; the DIMSE command
//! sets (group 0000, implicit VR little endian, with their group length)
//! are built and parsed here.

use super::tls::ClientTls;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::mem::InMemDicomObject;
use dicom_object::OpenFileOptions;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::{CloseSocket, SyncAssociation};
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Verification SOP class (C-ECHO).
pub(crate) const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Study Root Query/Retrieve Information Model - FIND.
pub(crate) const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
/// Study Root Query/Retrieve Information Model - MOVE.
pub(crate) const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
/// Implicit VR Little Endian (the default transfer syntax).
pub(crate) const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

pub(crate) const C_STORE_RQ: u16 = 0x0001;
pub(crate) const C_STORE_RSP: u16 = 0x8001;
const C_FIND_RQ: u16 = 0x0020;
const C_FIND_RSP: u16 = 0x8020;
const C_MOVE_RQ: u16 = 0x0021;
const C_MOVE_RSP: u16 = 0x8021;
pub(crate) const C_ECHO_RQ: u16 = 0x0030;
pub(crate) const C_ECHO_RSP: u16 = 0x8030;
const NO_DATA_SET: u16 = 0x0101;
pub(crate) const STATUS_SUCCESS: u16 = 0x0000;
pub(crate) const STATUS_CANNOT_UNDERSTAND: u16 = 0xC000;
pub(crate) const STATUS_OUT_OF_RESOURCES: u16 = 0xA700;
pub(crate) const STATUS_UNRECOGNIZED_OPERATION: u16 = 0x0211;

/// A DICOM network failure, naming the peer and the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// A peer given as text is not `AE@HOST:PORT`.
    #[error("invalid DICOM peer `{0}`: expected AE_TITLE@HOST:PORT (AE title 1-16 characters)")]
    Peer(String),
    /// The association could not be established (connection refused,
    /// rejected, no accepted presentation context).
    #[error("cannot associate with {peer}: {message}")]
    Associate {
        /// The peer (`AE@HOST:PORT`).
        peer: String,
        /// What went wrong.
        message: String,
    },
    /// The exchange broke off or the peer sent something unexpected.
    #[error("DICOM exchange with {peer} failed: {message}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What went wrong.
        message: String,
    },
    /// The peer answered with a failure status.
    #[error("{peer} answered {operation} with status 0x{status:04X}{comment}")]
    Status {
        /// The peer.
        peer: String,
        /// The operation, e.g. `C-STORE of <file>`.
        operation: String,
        /// The DIMSE status.
        status: u16,
        /// `: <ErrorComment>` when the peer sent one.
        comment: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An AE title is not 1 to 16 printable ASCII characters without a
    /// backslash.
    #[error("`{0}` is not a valid AE title (1 to 16 printable ASCII characters, no backslash)")]
    AeTitle(String),
    /// A send returned no outcome for a file: it was not attempted.
    #[error("not attempted")]
    NotAttempted,
}

/// A remote application entity: AE title, TCP address and, when the
/// connection is to use TLS, the client configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its AE title (1 to 16 characters).
    pub ae_title: String,
    /// `HOST:PORT`.
    pub address: String,
    /// Connect with TLS using this configuration (plain TCP when `None`).
    pub tls: Option<ClientTls>,
}

impl Peer {
    /// The same peer reached with TLS (`Some`) or plain TCP (`None`).
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The host part of the address (the name its certificate must carry).
    fn host(&self) -> &str {
        let host = self
            .address
            .rsplit_once(':')
            .map_or(&self.address[..], |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.ae_title, self.address)
    }
}

impl std::str::FromStr for Peer {
    type Err = NetError;
    /// Parses `AE@HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || NetError::Peer(s.to_string());
        let (ae, address) = s.split_once('@').ok_or_else(bad)?;
        validate_ae_title(ae).map_err(|_| bad())?;
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(Self {
            ae_title: ae.to_string(),
            address: address.to_string(),
            tls: None,
        })
    }
}

/// Checks an AE title: 1 to 16 printable ASCII characters, no backslash,
/// not only spaces.
pub fn validate_ae_title(ae: &str) -> Result<(), NetError> {
    if ae.trim().is_empty()
        || ae.len() > 16
        || !ae.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        || ae.contains('\\')
    {
        return Err(NetError::AeTitle(ae.to_string()));
    }
    Ok(())
}

// ---------------------------------------------------------------- messages

/// One DIMSE message: its presentation context, command set and, when the
/// command announces one, its data set (encoded in the context's transfer
/// syntax).
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Presentation context ID.
    pub context_id: u8,
    /// The command set (group 0000).
    pub command: InMemDicomObject,
    /// The data set bytes.
    pub data: Option<Vec<u8>>,
}

impl Message {
    /// A 16-bit command field (e.g. Status), if present.
    pub(crate) fn u16(&self, tag: Tag) -> Option<u16> {
        self.command.element(tag).ok().and_then(|e| e.to_int().ok())
    }
    /// A text command field (e.g. AffectedSOPInstanceUID), trimmed.
    pub(crate) fn text(&self, tag: Tag) -> Option<String> {
        self.command
            .element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    }
}

/// What broke on an established association; the caller names the peer
/// (it becomes [`NetError::Protocol`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// Sending or receiving a PDU failed (dicom-ul's words).
    #[error(transparent)]
    Transport(Box<dyn std::error::Error + Send + Sync>),
    /// A command set could not be encoded.
    #[error("encoding a command: {0}")]
    EncodeCommand(Box<dyn std::error::Error + Send + Sync>),
    /// A received command set could not be read.
    #[error("unreadable command set: {0}")]
    ReadCommand(Box<dyn std::error::Error + Send + Sync>),
    /// The peer broke the order of a DIMSE message's fragments or of the
    /// association's PDUs.
    #[error("{0}")]
    Sequence(String),
}

/// Send/receive PDUs on an established association (client or server).
pub(crate) trait Link {
    fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), LinkError>;
    fn receive_pdu(&mut self) -> Result<Pdu, LinkError>;
    /// The largest PDU the peer accepts (0 = no limit).
    fn peer_max_pdu(&self) -> u32;
}

impl<S: Read + Write + CloseSocket> Link for ClientAssociation<S> {
    fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), LinkError> {
        self.send(pdu).map_err(|e| LinkError::Transport(e.into()))
    }
    fn receive_pdu(&mut self) -> Result<Pdu, LinkError> {
        self.receive().map_err(|e| LinkError::Transport(e.into()))
    }
    fn peer_max_pdu(&self) -> u32 {
        self.acceptor_max_pdu_length()
    }
}

impl<S: Read + Write + CloseSocket> Link for dicom_ul::ServerAssociation<S> {
    fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), LinkError> {
        SyncAssociation::send(self, pdu).map_err(|e| LinkError::Transport(e.into()))
    }
    fn receive_pdu(&mut self) -> Result<Pdu, LinkError> {
        SyncAssociation::receive(self).map_err(|e| LinkError::Transport(e.into()))
    }
    fn peer_max_pdu(&self) -> u32 {
        self.requestor_max_pdu_length()
    }
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

fn put_u16(obj: &mut InMemDicomObject, tag: Tag, value: u16) {
    obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

fn implicit_le() -> &'static dicom_encoding::TransferSyntax {
    TransferSyntaxRegistry
        .get(IMPLICIT_VR_LE)
        .expect("implicit VR little endian is always registered")
}

/// Encodes a command set in implicit VR little endian, with its group length.
fn encode_command(command: &InMemDicomObject) -> Result<Vec<u8>, LinkError> {
    let mut body = Vec::new();
    command
        .write_dataset_with_ts(&mut body, implicit_le())
        .map_err(|e| LinkError::EncodeCommand(e.into()))?;
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Sends one message, fragmented to the peer's maximum PDU length.
pub(crate) fn send_message(
    link: &mut dyn Link,
    context_id: u8,
    command: &InMemDicomObject,
    data: Option<&[u8]>,
) -> Result<(), LinkError> {
    let max = match link.peer_max_pdu() {
        0 => 65536,
        n => n.min(1 << 20),
    } as usize;
    // PDV item header: 4 bytes length, context ID, control header.
    let chunk = max.saturating_sub(6).max(64);
    let mut send = |bytes: &[u8], value_type: PDataValueType| -> Result<(), LinkError> {
        let mut pieces = bytes.chunks(chunk).peekable();
        if pieces.peek().is_none() {
            return Err(LinkError::Sequence("empty DIMSE fragment".into()));
        }
        while let Some(piece) = pieces.next() {
            let pdu = Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: context_id,
                    value_type: value_type.clone(),
                    is_last: pieces.peek().is_none(),
                    data: piece.to_vec(),
                }],
            };
            link.send_pdu(&pdu)?;
        }
        Ok(())
    };
    send(&encode_command(command)?, PDataValueType::Command)?;
    if let Some(d) = data {
        send(d, PDataValueType::Data)?;
    }
    Ok(())
}

/// Receives one message. `Ok(None)` when the peer released the
/// association (the release is answered) or aborted it.
pub(crate) fn receive_message(link: &mut dyn Link) -> Result<Option<Message>, LinkError> {
    let mut command_bytes = Vec::new();
    let mut command: Option<(u8, InMemDicomObject, bool)> = None;
    let mut data = Vec::new();
    loop {
        match link.receive_pdu()? {
            Pdu::PData { data: values } => {
                for v in values {
                    match v.value_type {
                        PDataValueType::Command => {
                            if command.is_some() {
                                return Err(LinkError::Sequence(
                                    "a command fragment after a complete command".into(),
                                ));
                            }
                            command_bytes.extend_from_slice(&v.data);
                            if v.is_last {
                                let obj = InMemDicomObject::read_dataset_with_ts(
                                    &command_bytes[..],
                                    implicit_le(),
                                )
                                .map_err(|e| LinkError::ReadCommand(e.into()))?;
                                let has_data = obj
                                    .element(tags::COMMAND_DATA_SET_TYPE)
                                    .ok()
                                    .and_then(|e| e.to_int::<u16>().ok())
                                    .is_some_and(|t| t != NO_DATA_SET);
                                command = Some((v.presentation_context_id, obj, has_data));
                                if !has_data {
                                    let (context_id, command, _) = command.take().unwrap();
                                    return Ok(Some(Message {
                                        context_id,
                                        command,
                                        data: None,
                                    }));
                                }
                            }
                        }
                        PDataValueType::Data => {
                            if command.is_none() {
                                return Err(LinkError::Sequence(
                                    "a data fragment before its command".into(),
                                ));
                            }
                            data.extend_from_slice(&v.data);
                            if v.is_last {
                                let (context_id, command, _) = command.take().unwrap();
                                return Ok(Some(Message {
                                    context_id,
                                    command,
                                    data: Some(data),
                                }));
                            }
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                link.send_pdu(&Pdu::ReleaseRP)?;
                return Ok(None);
            }
            Pdu::AbortRQ { source } => {
                tracing::warn!("association aborted by the peer ({source:?})");
                return Ok(None);
            }
            other => {
                return Err(LinkError::Sequence(format!(
                    "unexpected PDU: {}",
                    other.short_description()
                )))
            }
        }
    }
}

pub(crate) fn response(
    field: u16,
    request: &Message,
    status: u16,
    sop_class: Option<&str>,
    sop_instance: Option<&str>,
) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    if let Some(s) = sop_class {
        put_str(&mut c, tags::AFFECTED_SOP_CLASS_UID, VR::UI, s);
    }
    put_u16(&mut c, tags::COMMAND_FIELD, field);
    put_u16(
        &mut c,
        tags::MESSAGE_ID_BEING_RESPONDED_TO,
        request.u16(tags::MESSAGE_ID).unwrap_or(0),
    );
    put_u16(&mut c, tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET);
    put_u16(&mut c, tags::STATUS, status);
    if let Some(s) = sop_instance {
        put_str(&mut c, tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, s);
    }
    c
}

fn request(field: u16, sop_class: &str, message_id: u16, has_data: bool) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    put_str(&mut c, tags::AFFECTED_SOP_CLASS_UID, VR::UI, sop_class);
    put_u16(&mut c, tags::COMMAND_FIELD, field);
    put_u16(&mut c, tags::MESSAGE_ID, message_id);
    if field != C_ECHO_RQ {
        put_u16(&mut c, tags::PRIORITY, 0);
    }
    put_u16(
        &mut c,
        tags::COMMAND_DATA_SET_TYPE,
        if has_data { 0x0000 } else { NO_DATA_SET },
    );
    c
}

// --------------------------------------------------------------------- SCU

/// A client association over plain TCP or TLS.
enum ClientAssoc {
    Plain(ClientAssociation<TcpStream>),
    Tls(Box<ClientAssociation<dicom_ul::association::client::TlsStream>>),
}

impl ClientAssoc {
    fn link(&mut self) -> &mut dyn Link {
        match self {
            Self::Plain(a) => a,
            Self::Tls(a) => &mut **a,
        }
    }

    fn presentation_contexts(&self) -> &[dicom_ul::pdu::PresentationContextNegotiated] {
        match self {
            Self::Plain(a) => a.presentation_contexts(),
            Self::Tls(a) => a.presentation_contexts(),
        }
    }

    fn release(self) -> Result<(), dicom_ul::association::Error> {
        match self {
            Self::Plain(a) => a.release(),
            Self::Tls(a) => (*a).release(),
        }
    }
}

struct Session {
    assoc: ClientAssoc,
    peer: String,
    next_id: u16,
}

impl Session {
    /// Associates as `local_ae` with `peer`, proposing `contexts`
    /// (abstract syntax, transfer syntaxes).
    fn open(
        local_ae: &str,
        peer: &Peer,
        contexts: &[(String, Vec<String>)],
    ) -> Result<Self, NetError> {
        let name = peer.to_string();
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(local_ae.to_string())
            .called_ae_title(peer.ae_title.clone())
            .connection_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .write_timeout(Duration::from_secs(120));
        for (abstract_syntax, syntaxes) in contexts {
            options = options.with_presentation_context(abstract_syntax.clone(), syntaxes.clone());
        }
        let associate = |e: dicom_ul::association::Error| NetError::Associate {
            peer: name.clone(),
            message: error_chain(&e),
        };
        let assoc = match &peer.tls {
            None => ClientAssoc::Plain(
                options
                    .establish(peer.address.as_str())
                    .map_err(associate)?,
            ),
            Some(tls) => ClientAssoc::Tls(Box::new(
                options
                    .tls_config(tls.0.clone())
                    .server_name(peer.host())
                    .establish_tls(peer.address.as_str())
                    .map_err(associate)?,
            )),
        };
        Ok(Self {
            assoc,
            peer: name,
            next_id: 1,
        })
    }

    /// The accepted presentation context for `abstract_syntax`, and its
    /// transfer syntax.
    fn context(&self, abstract_syntax: &str) -> Option<(u8, String)> {
        self.assoc
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.reason == PresentationContextResultReason::Acceptance
                    && pc.abstract_syntax.trim_end_matches('\0') == abstract_syntax
            })
            .map(|pc| (pc.id, pc.transfer_syntax.trim_end_matches('\0').to_string()))
    }

    fn require_context(&self, abstract_syntax: &str, what: &str) -> Result<(u8, String), NetError> {
        self.context(abstract_syntax)
            .ok_or_else(|| NetError::Associate {
                peer: self.peer.clone(),
                message: format!(
                    "it accepted no presentation context for {what} ({abstract_syntax})"
                ),
            })
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn protocol(&self, message: impl Into<String>) -> NetError {
        NetError::Protocol {
            peer: self.peer.clone(),
            message: message.into(),
        }
    }

    fn send(
        &mut self,
        context_id: u8,
        command: &InMemDicomObject,
        data: Option<&[u8]>,
    ) -> Result<(), NetError> {
        send_message(self.assoc.link(), context_id, command, data)
            .map_err(|e| self.protocol(e.to_string()))
    }

    fn receive(&mut self) -> Result<Message, NetError> {
        match receive_message(self.assoc.link()) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(self.protocol("the peer ended the association mid-operation")),
            Err(e) => Err(self.protocol(e.to_string())),
        }
    }

    fn status_error(&self, operation: String, m: &Message) -> NetError {
        NetError::Status {
            peer: self.peer.clone(),
            operation,
            status: m.u16(tags::STATUS).unwrap_or(0xFFFF),
            comment: m
                .text(tags::ERROR_COMMENT)
                .map(|c| format!(": {c}"))
                .unwrap_or_default(),
        }
    }

    fn close(self) {
        if let Err(e) = self.assoc.release() {
            tracing::debug!("releasing the association with {}: {e}", self.peer);
        }
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn native_syntaxes() -> Vec<String> {
    vec![EXPLICIT_VR_LE.to_string(), IMPLICIT_VR_LE.to_string()]
}

/// C-ECHO: checks that `peer` accepts an association from `local_ae`.
pub fn echo(local_ae: &str, peer: &Peer) -> Result<(), NetError> {
    let mut s = Session::open(
        local_ae,
        peer,
        &[(VERIFICATION.into(), vec![IMPLICIT_VR_LE.into()])],
    )?;
    let (ctx, _) = s.require_context(VERIFICATION, "verification")?;
    let id = s.message_id();
    s.send(ctx, &request(C_ECHO_RQ, VERIFICATION, id, false), None)?;
    let r = s.receive()?;
    let status = r.u16(tags::STATUS);
    if status != Some(STATUS_SUCCESS) {
        return Err(s.status_error("C-ECHO".into(), &r));
    }
    s.close();
    Ok(())
}

/// The outcome of [`store_files`] for one file.
#[derive(Debug)]
pub struct StoreOutcome {
    /// The file.
    pub path: PathBuf,
    /// `Ok` when the peer stored it (status success or warning).
    pub result: Result<(), NetError>,
}

struct Outgoing {
    path: PathBuf,
    sop_class: String,
    sop_instance: String,
    syntax: String,
}

fn read_outgoing(path: &Path) -> Result<Outgoing, NetError> {
    let ferr = |m: String| NetError::File {
        path: path.to_path_buf(),
        message: m,
    };
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| ferr(format!("not a readable DICOM file: {e}")))?;
    let meta = obj.meta();
    let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    Ok(Outgoing {
        path: path.to_path_buf(),
        sop_class: clean(meta.media_storage_sop_class_uid()),
        sop_instance: clean(meta.media_storage_sop_instance_uid()),
        syntax: clean(meta.transfer_syntax()),
    })
}

fn is_native(syntax: &str) -> bool {
    syntax == EXPLICIT_VR_LE || syntax == IMPLICIT_VR_LE
}

/// C-STORE: sends `files` (DICOM files with a file meta group) to `peer` on
/// one association. Native files go in whichever of explicit/implicit VR
/// little endian the peer accepts; compressed files in their own transfer
/// syntax (no transcoding). Errors only when no association can be made;
/// each file's own outcome is in the returned list.
pub fn store_files(
    local_ae: &str,
    peer: &Peer,
    files: &[PathBuf],
) -> Result<Vec<StoreOutcome>, NetError> {
    let mut outcomes = Vec::new();
    let mut ready = Vec::new();
    for path in files {
        match read_outgoing(path) {
            Ok(o) => ready.push(o),
            Err(e) => outcomes.push(StoreOutcome {
                path: path.clone(),
                result: Err(e),
            }),
        }
    }
    if ready.is_empty() {
        return Ok(outcomes);
    }
    // One context per (SOP class, compressed syntax) pair; native files
    // share one context per SOP class.
    let mut contexts: Vec<(String, Vec<String>)> = Vec::new();
    for o in &ready {
        let syntaxes = if is_native(&o.syntax) {
            native_syntaxes()
        } else {
            vec![o.syntax.clone()]
        };
        if !contexts
            .iter()
            .any(|(a, s)| *a == o.sop_class && *s == syntaxes)
        {
            contexts.push((o.sop_class.clone(), syntaxes));
        }
    }
    if contexts.len() > 127 {
        return Err(NetError::Associate {
            peer: peer.to_string(),
            message: format!(
                "{} presentation contexts needed, at most 127 fit in one association",
                contexts.len()
            ),
        });
    }
    let mut s = Session::open(local_ae, peer, &contexts)?;
    let mut ready = ready.into_iter();
    while let Some(o) = ready.next() {
        let result = store_one(&mut s, &o);
        if let Err(e) = &result {
            tracing::warn!("C-STORE of {} to {}: {e}", o.path.display(), s.peer);
            if matches!(e, NetError::Protocol { .. }) {
                // The association is unusable: the rest fail with the same reason.
                let rest = ready.map(|r| StoreOutcome {
                    path: r.path,
                    result: Err(e.clone()),
                });
                outcomes.push(StoreOutcome {
                    path: o.path.clone(),
                    result: result.clone(),
                });
                outcomes.extend(rest);
                return Ok(outcomes);
            }
        }
        outcomes.push(StoreOutcome {
            path: o.path.clone(),
            result,
        });
    }
    s.close();
    Ok(outcomes)
}

fn store_one(s: &mut Session, o: &Outgoing) -> Result<(), NetError> {
    let accepted = s
        .assoc
        .presentation_contexts()
        .iter()
        .find(|pc| {
            pc.reason == PresentationContextResultReason::Acceptance
                && pc.abstract_syntax.trim_end_matches('\0') == o.sop_class
                && {
                    let ts = pc.transfer_syntax.trim_end_matches('\0');
                    ts == o.syntax || (is_native(ts) && is_native(&o.syntax))
                }
        })
        .map(|pc| (pc.id, pc.transfer_syntax.trim_end_matches('\0').to_string()));
    let Some((ctx, syntax)) = accepted else {
        return Err(NetError::Associate {
            peer: s.peer.clone(),
            message: format!(
                "it accepted no presentation context for SOP class {} in transfer syntax {} ({})",
                o.sop_class,
                o.syntax,
                o.path.display()
            ),
        });
    };
    let ferr = |m: String| NetError::File {
        path: o.path.clone(),
        message: m,
    };
    let obj = OpenFileOptions::new()
        .open_file(&o.path)
        .map_err(|e| ferr(format!("reading: {e}")))?;
    let ts = TransferSyntaxRegistry
        .get(&syntax)
        .ok_or_else(|| ferr(format!("unknown transfer syntax {syntax}")))?;
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(&mut bytes, ts)
        .map_err(|e| ferr(format!("encoding in {syntax}: {e}")))?;
    let id = s.message_id();
    let mut command = request(C_STORE_RQ, &o.sop_class, id, true);
    put_str(
        &mut command,
        tags::AFFECTED_SOP_INSTANCE_UID,
        VR::UI,
        &o.sop_instance,
    );
    s.send(ctx, &command, Some(&bytes))?;
    let r = s.receive()?;
    if r.u16(tags::COMMAND_FIELD) != Some(C_STORE_RSP) {
        return Err(s.protocol("expected a C-STORE response"));
    }
    match r.u16(tags::STATUS) {
        // Success, or one of the warnings (coercion, elements discarded).
        Some(0x0000) | Some(0x0001) | Some(0xB000) | Some(0xB006) | Some(0xB007) => Ok(()),
        _ => Err(s.status_error(format!("C-STORE of {}", o.path.display()), &r)),
    }
}

/// Study-level C-FIND keys; empty fields are returned, not matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyQuery {
    /// StudyInstanceUID to match (exact).
    pub study_uid: String,
    /// PatientID to match.
    pub patient_id: String,
    /// AccessionNumber to match.
    pub accession_number: String,
    /// StudyDate to match (`YYYYMMDD` or a range `A-B`).
    pub study_date: String,
}

/// One C-FIND match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyMatch {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// PatientID.
    pub patient_id: String,
    /// PatientName.
    pub patient_name: String,
    /// StudyDate.
    pub study_date: String,
    /// StudyDescription.
    pub study_description: String,
    /// AccessionNumber.
    pub accession_number: String,
}

pub(crate) fn text_of(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// C-FIND at study level (Study Root): the studies `peer` holds that match
/// `query`.
pub fn find_studies(
    local_ae: &str,
    peer: &Peer,
    query: &StudyQuery,
) -> Result<Vec<StudyMatch>, NetError> {
    let mut s = Session::open(
        local_ae,
        peer,
        &[(STUDY_ROOT_FIND.into(), native_syntaxes())],
    )?;
    let (ctx, syntax) = s.require_context(STUDY_ROOT_FIND, "Study Root C-FIND")?;
    let ts = TransferSyntaxRegistry
        .get(&syntax)
        .ok_or_else(|| s.protocol(format!("unknown transfer syntax {syntax}")))?;
    let mut id_obj = InMemDicomObject::new_empty();
    put_str(&mut id_obj, tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY");
    put_str(
        &mut id_obj,
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        &query.study_uid,
    );
    put_str(&mut id_obj, tags::PATIENT_ID, VR::LO, &query.patient_id);
    put_str(&mut id_obj, tags::PATIENT_NAME, VR::PN, "");
    put_str(&mut id_obj, tags::STUDY_DATE, VR::DA, &query.study_date);
    put_str(&mut id_obj, tags::STUDY_DESCRIPTION, VR::LO, "");
    put_str(
        &mut id_obj,
        tags::ACCESSION_NUMBER,
        VR::SH,
        &query.accession_number,
    );
    let mut data = Vec::new();
    id_obj
        .write_dataset_with_ts(&mut data, ts)
        .map_err(|e| s.protocol(format!("encoding the query: {e}")))?;
    let mid = s.message_id();
    s.send(
        ctx,
        &request(C_FIND_RQ, STUDY_ROOT_FIND, mid, true),
        Some(&data),
    )?;
    let mut found = Vec::new();
    loop {
        let r = s.receive()?;
        if r.u16(tags::COMMAND_FIELD) != Some(C_FIND_RSP) {
            return Err(s.protocol("expected a C-FIND response"));
        }
        match r.u16(tags::STATUS) {
            Some(0xFF00) | Some(0xFF01) => {
                let bytes = r
                    .data
                    .as_deref()
                    .ok_or_else(|| s.protocol("a pending C-FIND response without identifier"))?;
                let m = InMemDicomObject::read_dataset_with_ts(bytes, ts)
                    .map_err(|e| s.protocol(format!("unreadable C-FIND identifier: {e}")))?;
                found.push(StudyMatch {
                    study_uid: text_of(&m, tags::STUDY_INSTANCE_UID),
                    patient_id: text_of(&m, tags::PATIENT_ID),
                    patient_name: text_of(&m, tags::PATIENT_NAME),
                    study_date: text_of(&m, tags::STUDY_DATE),
                    study_description: text_of(&m, tags::STUDY_DESCRIPTION),
                    accession_number: text_of(&m, tags::ACCESSION_NUMBER),
                });
            }
            Some(STATUS_SUCCESS) => break,
            _ => return Err(s.status_error("C-FIND".into(), &r)),
        }
    }
    s.close();
    Ok(found)
}

/// Sub-operation counts of a finished C-MOVE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoveOutcome {
    /// Instances sent to the destination.
    pub completed: u16,
    /// Instances that failed.
    pub failed: u16,
    /// Instances sent with a warning.
    pub warning: u16,
}

/// C-MOVE (Study Root) of study `study_uid` from `peer` to the AE titled
/// `destination` (which `peer` must know, e.g. in Orthanc's
/// `DicomModalities`). Returns when `peer` reports the move finished; fails
/// on a failure status or when a sub-operation failed.
pub fn move_study(
    local_ae: &str,
    peer: &Peer,
    study_uid: &str,
    destination: &str,
) -> Result<MoveOutcome, NetError> {
    let mut s = Session::open(
        local_ae,
        peer,
        &[(STUDY_ROOT_MOVE.into(), native_syntaxes())],
    )?;
    let (ctx, syntax) = s.require_context(STUDY_ROOT_MOVE, "Study Root C-MOVE")?;
    let ts = TransferSyntaxRegistry
        .get(&syntax)
        .ok_or_else(|| s.protocol(format!("unknown transfer syntax {syntax}")))?;
    let mut id_obj = InMemDicomObject::new_empty();
    put_str(&mut id_obj, tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY");
    put_str(&mut id_obj, tags::STUDY_INSTANCE_UID, VR::UI, study_uid);
    let mut data = Vec::new();
    id_obj
        .write_dataset_with_ts(&mut data, ts)
        .map_err(|e| s.protocol(format!("encoding the move identifier: {e}")))?;
    let mid = s.message_id();
    let mut command = request(C_MOVE_RQ, STUDY_ROOT_MOVE, mid, true);
    put_str(&mut command, tags::MOVE_DESTINATION, VR::AE, destination);
    s.send(ctx, &command, Some(&data))?;
    loop {
        let r = s.receive()?;
        if r.u16(tags::COMMAND_FIELD) != Some(C_MOVE_RSP) {
            return Err(s.protocol("expected a C-MOVE response"));
        }
        let outcome = MoveOutcome {
            completed: r.u16(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS).unwrap_or(0),
            failed: r.u16(tags::NUMBER_OF_FAILED_SUBOPERATIONS).unwrap_or(0),
            warning: r.u16(tags::NUMBER_OF_WARNING_SUBOPERATIONS).unwrap_or(0),
        };
        match r.u16(tags::STATUS) {
            Some(0xFF00) => continue,
            Some(STATUS_SUCCESS) if outcome.failed == 0 => {
                s.close();
                return Ok(outcome);
            }
            _ => {
                return Err(s.status_error(
                    format!(
                        "C-MOVE of study {study_uid} to {destination} ({} sent, {} failed)",
                        outcome.completed, outcome.failed
                    ),
                    &r,
                ))
            }
        }
    }
}

/// ImplementationClassUID of files clisc writes from the network.
pub(crate) const IMPLEMENTATION_CLASS_UID: &str = "2.25.229598616520391406958432916853934412107";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_bad_text() {
        let p: Peer = "ORTHANC@127.0.0.1:4242".parse().unwrap();
        assert_eq!(p.ae_title, "ORTHANC");
        assert_eq!(p.address, "127.0.0.1:4242");
        assert_eq!(p.to_string(), "ORTHANC@127.0.0.1:4242");
        for bad in [
            "ORTHANC",
            "@h:1",
            "A@h",
            "A@:1",
            "A@h:x",
            "ABCDEFGHIJKLMNOPQ@h:1",
            "A\\B@h:1",
        ] {
            assert!(bad.parse::<Peer>().is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_round_trip_with_group_length() {
        let c = request(C_STORE_RQ, "1.2.3", 7, true);
        let bytes = encode_command(&c).unwrap();
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 12);
        let back = InMemDicomObject::read_dataset_with_ts(&bytes[..], implicit_le()).unwrap();
        let m = Message {
            context_id: 1,
            command: back,
            data: None,
        };
        assert_eq!(m.u16(tags::COMMAND_FIELD), Some(C_STORE_RQ));
        assert_eq!(m.u16(tags::MESSAGE_ID), Some(7));
        assert_eq!(
            m.text(tags::AFFECTED_SOP_CLASS_UID).as_deref(),
            Some("1.2.3")
        );
    }
}
