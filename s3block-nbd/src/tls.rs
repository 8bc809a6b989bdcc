//! TLS for `NBD_OPT_STARTTLS`: a rustls server configuration from PEM files.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::NbdError;

/// A TLS server configuration from a PEM certificate chain (the server's
/// certificate first) and a PEM private key (PKCS#8, PKCS#1 or SEC1), with
/// TLS 1.2 and 1.3 and no client certificates. Errors name the file at
/// fault and what is wrong with it.
pub fn load_tls_config(
    cert_pem_path: impl AsRef<std::path::Path>,
    key_pem_path: impl AsRef<std::path::Path>,
) -> Result<Arc<rustls::ServerConfig>, NbdError> {
    let (cert_path, key_path) = (cert_pem_path.as_ref(), key_pem_path.as_ref());
    let bad = |path: &std::path::Path, reason: String| NbdError::TlsConfig {
        path: path.display().to_string(),
        reason,
    };
    let read =
        |path: &std::path::Path| std::fs::read(path).map_err(|e| bad(path, format!("cannot be read: {e}")));
    let cert_pem = read(cert_path)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert_path, format!("is not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad(cert_path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad(key_path, format!("holds no usable PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert_path, format!("no TLS version available: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            bad(key_path, format!("does not go with the certificate in {}: {e}", cert_path.display()))
        })?;
    Ok(Arc::new(config))
}
