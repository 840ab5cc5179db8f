//! TLS for the DICOM node, in the manner of the DICOM secure transport
//! connection profiles (PS3.15 Annex B): both ends present a certificate
//! and accept only a peer whose certificate is signed by the configured
//! certificate authority. Certificates and keys are PEM files.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong setting TLS up, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {path}: {message}")]
pub struct TlsError {
    /// The file (or setting) at fault.
    pub path: PathBuf,
    /// What was wrong and what was expected.
    pub message: String,
}

/// The node's certificate, its key and the authority its peers' certificates
/// must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain of this node (leaf first).
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM certificate(s) of the authority that signs peers' certificates.
    pub ca: PathBuf,
}

/// A client-side TLS configuration, shared by the connections to one peer.
#[derive(Clone)]
pub struct ClientTls(pub Arc<ClientConfig>);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ClientTls {}

fn error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, format!("cannot read PEM certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(error(
            path,
            "no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        error(
            path,
            format!("no usable private key (expected a PEM PKCS#8, PKCS#1 or SEC1 key): {e}"),
        )
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store
            .add(cert)
            .map_err(|e| error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The configuration for connecting to peers: trusts only `files.ca` and
/// presents this node's certificate.
pub fn client_config(files: &TlsFiles) -> Result<ClientTls, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(&files.cert, e.to_string()))?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(certificates(&files.cert)?, private_key(&files.key)?)
        .map_err(|e| error(&files.key, format!("does not match the certificate: {e}")))?;
    Ok(ClientTls(Arc::new(config)))
}

/// The configuration for accepting peers: presents this node's certificate
/// and requires a client certificate signed by `files.ca`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&files.ca)?),
        provider(),
    )
    .build()
    .map_err(|e| error(&files.ca, format!("cannot verify clients with it: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| error(&files.cert, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates(&files.cert)?, private_key(&files.key)?)
        .map_err(|e| error(&files.key, format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let files = TlsFiles {
            cert: junk.clone(),
            key: dir.path().join("missing.key"),
            ca: junk.clone(),
        };
        let e = client_config(&files).unwrap_err();
        assert_eq!(e.path, junk);
        assert!(e.message.contains("no certificate"), "{e}");
        let e = server_config(&files).unwrap_err();
        assert!(e.to_string().contains("junk.pem"), "{e}");
    }
}
