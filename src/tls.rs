//! TLS client settings for every HTTPS client polydev makes (the broker's provider APIs, Vault):
//! rustls with ring, certificates checked against the system's CA certificates plus an
//! operator's PEM file.
//!
//! Invariant: a client always has at least one root to check against; the callers put their
//! own names (provider, option) on the errors.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why a TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("there is no CA certificate to check against")]
    NoRoots,
    #[error("{0}")]
    Config(String),
}

/// The system's CA certificates (`/etc/ssl/certs` on Debian); unreadable entries are skipped.
pub fn system_roots() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::warn!(
            errors = found.errors.len(),
            "some system CA certificates could not be read"
        );
    }
    found.certs
}

/// A client configuration trusting `system_roots` and the certificates in `ca_file`.
pub fn client_config(
    system_roots: &[CertificateDer<'static>],
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let (_added, _ignored) = roots.add_parsable_certificates(system_roots.iter().cloned());
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots
                .add(cert)
                .map_err(|e| ca_error(path, &e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsSetupError::Config(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| ca_error(path, &e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| ca_error(path, &e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_error(path, "it holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn ca_error(path: &Path, reason: &str) -> TlsSetupError {
    TlsSetupError::CaFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(&[], Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("no CERTIFICATE block"),
            "{err}"
        );
        assert!(matches!(
            client_config(&[], None),
            Err(TlsSetupError::NoRoots)
        ));
    }
}
