//! The client commands' TLS: rustls with the `ring` provider (pure Rust and C, no cmake or
//! nasm to build), trusting the system's roots plus an operator's private CA (`--ca-cert`).
//!
//! The system roots are read from the OS trust store by `rustls-native-certs` (on Linux
//! `/etc/ssl/certs` and friends, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), not from a CA list
//! compiled into cordon (`webpki-roots`): a company CA the machine's administrators installed
//! is honoured, and the list is updated with the OS rather than with cordon.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{Failure, invalid};

/// The flag (and variable) that adds a CA: every certificate message names it.
pub(crate) const CA_FLAG: &str = "--ca-cert FILE (or CORDON_CA_CERT)";

/// rustls's configuration for the service's client: the system roots, plus every
/// certificate in the PEM file `ca_cert`.
pub(crate) fn client_config(ca_cert: Option<&Path>) -> Result<rustls::ClientConfig, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    for e in &native.errors {
        tracing::debug!("reading the system's CA certificates: {e}");
    }
    tracing::debug!(added, ignored, "system CA certificates");
    if let Some(path) = ca_cert {
        for cert in read_ca(path)? {
            roots.add(cert).map_err(|e| {
                invalid(format!(
                    "--ca-cert {}: a certificate in it is not usable as a CA: {e}",
                    path.display()
                ))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| super::infra(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates of a PEM file (`-----BEGIN CERTIFICATE-----` blocks; anything else in it
/// is ignored). None is an error.
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let text = std::fs::read(path)
        .map_err(|e| invalid(format!("--ca-cert {}: cannot read it: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            invalid(format!(
                "--ca-cert {}: not a readable PEM file: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "--ca-cert {}: no certificate in it; give the CA's certificate in PEM (a -----BEGIN CERTIFICATE----- block)",
            path.display()
        )));
    }
    Ok(certs)
}

/// What went wrong in TLS, said for a person, if `e` (or what caused it) is a TLS error.
pub(crate) fn explain(e: &(dyn std::error::Error + 'static), base: &str) -> Option<String> {
    let tls = crate::error::find_rustls_error(e)?;
    use rustls::CertificateError as C;
    let why = match tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer)
        | rustls::Error::InvalidCertificate(C::BadSignature)
        | rustls::Error::InvalidCertificate(C::UnhandledCriticalExtension) => format!(
            "the service's certificate is not signed by a CA this machine trusts; if it is signed by a private CA, give that CA's certificate with {CA_FLAG}"
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            "the service's certificate is not issued for the host name in --server: use a name the certificate carries (or have the certificate reissued with this one)".to_string()
        }
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. })
        | rustls::Error::InvalidCertificate(C::NotValidYet)
        | rustls::Error::InvalidCertificate(C::NotValidYetContext { .. }) => {
            "the service's certificate is expired or not yet valid: check this machine's clock, or have the certificate renewed".to_string()
        }
        rustls::Error::InvalidCertificate(other) => format!(
            "the service's certificate is refused ({other:?}); if it is signed by a private CA, give that CA's certificate with {CA_FLAG}"
        ),
        rustls::Error::InvalidMessage(_) => {
            "the TLS handshake failed: the other end does not speak TLS there (is it a plain http:// address?)".to_string()
        }
        other => format!("the TLS handshake failed: {other}"),
    };
    Some(format!("cannot reach {base}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_error_wrapped_in_io_names_the_flag() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let msg = explain(&io, "https://svc:8420").expect("a TLS error");
        assert!(msg.contains("--ca-cert FILE"), "{msg}");
        assert!(msg.starts_with("cannot reach https://svc:8420: "), "{msg}");
    }

    #[test]
    fn other_errors_are_not_tls_errors() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(explain(&io, "https://svc").is_none());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_by_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").expect("write");
        let Err(f) = client_config(Some(&path)) else {
            panic!("accepted a CA file with no certificate");
        };
        assert!(f.message.starts_with("--ca-cert "), "{}", f.message);
        assert_eq!(f.code, crate::cli::EXIT_INVALID);
        let Err(f) = client_config(Some(&dir.path().join("missing.pem"))) else {
            panic!("accepted a missing CA file");
        };
        assert!(f.message.contains("cannot read it"), "{}", f.message);
    }
}
