//! Reaching a remote engine over TLS as the `docker` CLI does: `DOCKER_HOST=tcp://host:2376`
//! with `DOCKER_TLS_VERIFY=1`, and in `DOCKER_CERT_PATH` (default `~/.docker`) `ca.pem` (the
//! CA that signed the engine's certificate), `cert.pem` and `key.pem` (cordon's client
//! certificate, which the engine checks against its `--tlscacert`).
//!
//! bollard makes the connection (rustls, the `ring` provider); this module decides whether TLS
//! is wanted, checks the three files before connecting (bollard reads the client certificate
//! only during a handshake, and a bad one is then silently not sent), and says what to fix
//! when a handshake fails.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How to reach the engine at `DOCKER_HOST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// A unix socket (or any other scheme bollard knows by itself).
    Local,
    /// `tcp://` (or `http://`) without TLS.
    PlainTcp,
    /// `tcp://` with `DOCKER_TLS_VERIFY`, or `https://`.
    Tls,
}

/// The transport for `endpoint` given `DOCKER_TLS_VERIFY` and `DOCKER_TLS` (each set and not
/// empty, as the docker CLI reads them). `DOCKER_TLS` alone (TLS without verifying the engine)
/// is refused: cordon never talks to an engine it has not authenticated.
pub(super) fn transport(endpoint: &str, tls_verify: bool, tls: bool) -> Result<Transport, String> {
    let tcp = endpoint.starts_with("tcp://") || endpoint.starts_with("http://");
    if endpoint.starts_with("https://") || (tcp && tls_verify) {
        Ok(Transport::Tls)
    } else if tcp && tls {
        Err("DOCKER_TLS is set: TLS without verifying the engine, which cordon does not do; set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the directory with ca.pem, cert.pem and key.pem (or unset DOCKER_TLS for a plain tcp:// engine)".into())
    } else if tcp {
        Ok(Transport::PlainTcp)
    } else {
        Ok(Transport::Local)
    }
}

/// `DOCKER_CERT_PATH` if set and not empty, else `~/.docker`.
pub(super) fn cert_dir(docker_cert_path: Option<std::ffi::OsString>) -> PathBuf {
    match docker_cert_path.filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::home_dir().unwrap_or_default().join(".docker"),
    }
}

/// Checks that `dir` holds a PEM `ca.pem`, `cert.pem` and `key.pem`; the error names the file,
/// what it should hold, and `DOCKER_CERT_PATH`.
pub(super) fn check_cert_dir(dir: &Path) -> Result<(), String> {
    let files = [
        (
            "ca.pem",
            "the CA certificate that signed the engine's (dockerd --tlscacert)",
        ),
        (
            "cert.pem",
            "cordon's client certificate, signed by a CA the engine trusts",
        ),
        ("key.pem", "the private key of cert.pem"),
    ];
    for (name, role) in files {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "DOCKER_TLS_VERIFY is set, but {} cannot be read ({e}): put {role} there, or point DOCKER_CERT_PATH at the directory holding ca.pem, cert.pem and key.pem",
                path.display()
            )
        })?;
        let usable = if name == "key.pem" {
            PrivateKeyDer::from_pem_slice(&bytes).is_ok()
        } else {
            CertificateDer::pem_slice_iter(&bytes)
                .next()
                .is_some_and(|c| c.is_ok())
        };
        if !usable {
            return Err(format!(
                "{} (in DOCKER_CERT_PATH) is not PEM: it should hold {role}",
                path.display()
            ));
        }
    }
    Ok(())
}

/// What to fix, if `e` (a failed first call to the engine) is a TLS failure.
pub(super) fn explain(e: &(dyn std::error::Error + 'static), dir: &Path) -> Option<String> {
    let dir = dir.display();
    Some(match crate::error::find_rustls_error(e)? {
        rustls::Error::InvalidCertificate(c) => format!(
            "the engine's TLS certificate is refused ({c:?}): {dir}/ca.pem (DOCKER_CERT_PATH) must be the CA that signed it, and DOCKER_HOST must name a host or IP address the certificate carries"
        ),
        rustls::Error::AlertReceived(alert) => format!(
            "the engine refused the TLS connection ({alert:?}): it must trust the CA that signed {dir}/cert.pem (DOCKER_CERT_PATH), its --tlscacert"
        ),
        other => format!(
            "the TLS handshake with the engine failed ({other}): is DOCKER_HOST a TLS port (2376), and DOCKER_CERT_PATH={dir} right?"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_follows_the_docker_cli() {
        use Transport::*;
        let t = |e, v, t| transport(e, v, t);
        assert_eq!(t("unix:///var/run/docker.sock", false, false), Ok(Local));
        assert_eq!(t("unix:///var/run/docker.sock", true, false), Ok(Local));
        assert_eq!(t("tcp://h:2375", false, false), Ok(PlainTcp));
        assert_eq!(t("tcp://h:2376", true, false), Ok(Tls));
        assert_eq!(t("tcp://h:2376", true, true), Ok(Tls));
        assert_eq!(t("https://h:2376", false, false), Ok(Tls));
        let refused = t("tcp://h:2376", false, true).expect_err("DOCKER_TLS alone");
        assert!(refused.contains("DOCKER_TLS_VERIFY=1"), "{refused}");
    }

    #[test]
    fn an_empty_cert_path_is_the_default() {
        let home = cert_dir(None);
        assert!(home.ends_with(".docker"), "{}", home.display());
        assert_eq!(cert_dir(Some("".into())), home);
        assert_eq!(cert_dir(Some("/certs".into())), PathBuf::from("/certs"));
    }

    #[test]
    fn each_missing_or_bad_file_is_named_with_its_role() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = check_cert_dir(dir.path()).expect_err("empty dir");
        assert!(err.contains("ca.pem cannot be read"), "{err}");
        assert!(err.contains("DOCKER_CERT_PATH"), "{err}");

        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write");
        let err = check_cert_dir(dir.path()).expect_err("no cert.pem");
        assert!(err.contains("cert.pem cannot be read"), "{err}");
        assert!(err.contains("client certificate"), "{err}");

        std::fs::write(dir.path().join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("key.pem"), "not a key").expect("write");
        let err = check_cert_dir(dir.path()).expect_err("bad key.pem");
        assert!(
            err.contains("key.pem (in DOCKER_CERT_PATH) is not PEM"),
            "{err}"
        );

        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).expect("write");
        check_cert_dir(dir.path()).expect("all three");
    }

    #[test]
    fn a_wrapped_certificate_error_names_ca_pem() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let msg = explain(&io, Path::new("/certs")).expect("a TLS error");
        assert!(msg.contains("/certs/ca.pem"), "{msg}");
        let plain = std::io::Error::other("connection refused");
        assert!(explain(&plain, Path::new("/certs")).is_none());
    }
}
