//! Reaching a remote engine over TLS as the `docker` CLI does: `DOCKER_HOST=tcp://host:2376`
//! with `DOCKER_TLS_VERIFY=1`, and in `DOCKER_CERT_PATH` (default `~/.docker`) `ca.pem` (the
//! CA that signed the engine's certificate), `cert.pem` and `key.pem` (cordon's client
//! certificate, which the engine checks against its `--tlscacert`).
//!
//! bollard makes the connection (rustls, the `ring` provider); this module decides whether TLS
//! is wanted, checks the three files before connecting (bollard reads the client certificate
//! only during a handshake, and a bad one is then silently not sent), and says what to fix
//! when a handshake fails.
//!
//! Under TLS 1.3 the engine judges the client certificate after the client has finished its
//! side of the handshake, so its refusal (an alert) can reach bollard's connection task
//! before any request is sent: bollard then reports only "connection was not ready". For
//! such a failure [`diagnose`] repeats the handshake by itself and reads the engine's answer.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    Some(advice(crate::error::find_rustls_error(e)?, dir))
}

/// What to fix, if a handshake of cordon's own with the engine at `endpoint`, with the files
/// in `dir`, fails at TLS: for a failure bollard could not say more about. Bounded by 5 s.
pub(super) async fn diagnose(endpoint: &str, dir: &Path) -> Option<String> {
    let (endpoint, owned_dir) = (endpoint.to_string(), dir.to_path_buf());
    let failure = tokio::task::spawn_blocking(move || handshake(&endpoint, &owned_dir))
        .await
        .ok()??;
    Some(advice(&failure, dir))
}

/// Connects to `endpoint` as the engine's client, sends `GET /_ping` and reads the answer;
/// the TLS error met on the way, if any. Anything else (no route, a closed port) is not
/// this module's to explain.
fn handshake(endpoint: &str, dir: &Path) -> Option<rustls::Error> {
    let address = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()?;
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => (host, port.parse().ok()?),
        _ => (address, 2376),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(client_config(dir)?), name).ok()?;
    let timeout = Duration::from_secs(5);
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let ping = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n";
    let io = match tls.write_all(ping) {
        Err(e) => e,
        Ok(()) => tls.read(&mut [0u8; 512]).err()?,
    };
    io.into_inner()?
        .downcast::<rustls::Error>()
        .ok()
        .map(|e| *e)
}

/// The client side of a connection to the engine, from the three files in `dir`.
fn client_config(dir: &Path) -> Option<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(dir.join("ca.pem")).ok()? {
        roots.add(ca.ok()?).ok()?;
    }
    let certs = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).ok()?;
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .ok()
}

/// The fix for a TLS failure with the engine, naming the file in `dir` to change.
fn advice(failure: &rustls::Error, dir: &Path) -> String {
    let dir = dir.display();
    match failure {
        rustls::Error::InvalidCertificate(c) => format!(
            "the engine's TLS certificate is refused ({c:?}): {dir}/ca.pem (DOCKER_CERT_PATH) must be the CA that signed it, and DOCKER_HOST must name a host or IP address the certificate carries"
        ),
        rustls::Error::AlertReceived(alert) => format!(
            "the engine refused the TLS connection ({alert:?}): it must trust the CA that signed {dir}/cert.pem (DOCKER_CERT_PATH), its --tlscacert"
        ),
        other => format!(
            "the TLS handshake with the engine failed ({other}): is DOCKER_HOST a TLS port (2376), and DOCKER_CERT_PATH={dir} right?"
        ),
    }
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

    /// A CA of the test's own, and a leaf it signs for `name` (server or client use).
    fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().expect("CA key");
        rcgen::CertifiedIssuer::self_signed(params, key).expect("CA")
    }

    fn leaf(
        issuer: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
        name: &str,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// An engine requiring a client certificate signed by its own CA, shown one signed by
    /// another: the probe reads the engine's refusal, whatever bollard made of it.
    #[tokio::test]
    async fn the_probe_reads_the_engines_refusal_of_the_client_certificate() {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let provider = || Arc::new(rustls::crypto::ring::default_provider());
        let (engine_ca, other_ca) = (ca("engine CA"), ca("unknown CA"));
        let (server_cert, server_key) = leaf(&engine_ca, "127.0.0.1", ServerAuth);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(engine_ca.der().clone()).expect("root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .expect("verifier");
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                CertificateDer::pem_slice_iter(server_cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("cert"),
                PrivateKeyDer::from_pem_slice(server_key.as_bytes()).expect("key"),
            )
            .expect("server config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });

        let dir = tempfile::tempdir().expect("tempdir");
        let (client_cert, client_key) = leaf(&other_ca, "cordon", ClientAuth);
        std::fs::write(dir.path().join("ca.pem"), engine_ca.pem()).expect("write");
        std::fs::write(dir.path().join("cert.pem"), client_cert).expect("write");
        std::fs::write(dir.path().join("key.pem"), client_key).expect("write");
        let why = diagnose(&format!("tcp://127.0.0.1:{port}"), dir.path())
            .await
            .expect("a TLS refusal");
        assert!(
            why.contains("the engine refused the TLS connection"),
            "{why}"
        );
        assert!(why.contains("cert.pem"), "{why}");

        // Nothing listening: not a TLS failure, so nothing to say.
        drop(dir);
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(diagnose("tcp://127.0.0.1:1", empty.path()).await.is_none());
    }
}
