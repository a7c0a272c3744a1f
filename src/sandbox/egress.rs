//! The allowlisting HTTP proxy that is a `prepare` container's only way out.
//!
//! The container sits on an internal Docker network (no route to anywhere); this proxy
//! listens on that network's gateway address on the host. It serves `CONNECT host:port`
//! (HTTPS, tunnelled untouched: TLS stays end to end) and absolute-URI HTTP requests, and
//! only for hosts on the allowlist and ports 80/443. Everything else gets `403` and is
//! recorded, so the job's result can say what was refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// Longest request head the proxy reads before giving up on a client.
const MAX_HEAD: usize = 16 * 1024;

/// A running proxy; stops when dropped.
pub struct EgressProxy {
    addr: SocketAddr,
    refused: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl EgressProxy {
    /// Starts a proxy on `ip` (an ephemeral port) allowing `allow` (`host` or `*.domain`).
    pub async fn start(ip: IpAddr, allow: Vec<String>) -> std::io::Result<EgressProxy> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let refused = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let allow = Arc::new(allow);
        let (r, s) = (refused.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = s.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((client, peer)) = accepted else {
                    continue;
                };
                let (allow, refused, stop) = (allow.clone(), r.clone(), s.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        res = serve(client, &allow, &refused) => {
                            if let Err(e) = res {
                                debug!(%peer, error = %e, "egress proxy connection ended");
                            }
                        }
                    }
                });
            }
        });
        Ok(EgressProxy {
            addr,
            refused,
            stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` destinations refused so far, each once, in order.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Whether `host` is on the allowlist.
pub fn allowed(allow: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    allow.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match a.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == a,
        }
    })
}

async fn serve(
    client: TcpStream,
    allow: &[String],
    refused: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client);
    let mut head = String::new();
    // Read the request head (request line + headers).
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line))
            .await
            .map_err(|_| std::io::Error::other("client sent no request"))??;
        if n == 0 {
            return Ok(());
        }
        head.push_str(&line);
        if head.len() > MAX_HEAD {
            return respond(reader.get_mut(), "431 Request Header Fields Too Large").await;
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = request_line.split_whitespace();
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );

    let (host, port, rest_of_head) = if method.eq_ignore_ascii_case("CONNECT") {
        let Some((h, p)) = target.rsplit_once(':') else {
            return respond(reader.get_mut(), "400 Bad Request").await;
        };
        (
            h.trim_matches(['[', ']']).to_string(),
            p.parse::<u16>().unwrap_or(0),
            None,
        )
    } else {
        // Absolute-form: `GET http://host[:port]/path HTTP/1.1`.
        let Some(after) = target.strip_prefix("http://") else {
            return respond(reader.get_mut(), "400 Bad Request").await;
        };
        let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
        let (h, p) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().unwrap_or(0)),
            None => (authority.to_string(), 80),
        };
        let path = if path.is_empty() { "/" } else { path };
        let mut rewritten = format!("{method} {path} {version}\r\n");
        for line in head.lines().skip(1) {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("proxy-connection:") || lower.starts_with("proxy-authorization:") {
                continue;
            }
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
        (h, p, Some(rewritten))
    };

    let dest = format!("{host}:{port}");
    if !(port == 443 || port == 80) || !allowed(allow, &host) {
        info!(destination = %dest, "egress refused: not on the allowlist");
        if let Ok(mut r) = refused.lock()
            && !r.contains(&dest)
        {
            r.push(dest.clone());
        }
        return respond(reader.get_mut(), "403 Forbidden").await;
    }
    let upstream =
        match tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(&dest)).await {
            Ok(Ok(s)) => s,
            _ => return respond(reader.get_mut(), "502 Bad Gateway").await,
        };
    debug!(destination = %dest, "egress allowed");
    let mut upstream = upstream;
    match rest_of_head {
        None => {
            reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await?;
        }
        Some(head) => upstream.write_all(head.as_bytes()).await?,
    }
    // Whatever the client sent after the head (already buffered) goes first.
    let buffered = reader.buffer().to_vec();
    if !buffered.is_empty() {
        upstream.write_all(&buffered).await?;
    }
    let mut client = reader.into_inner();
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn respond(client: &mut TcpStream, status: &str) -> std::io::Result<()> {
    let body = format!("cordon egress proxy: {status}\n");
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(msg.as_bytes()).await?;
    client.shutdown().await?;
    // Drain a little so the client sees the response rather than a reset.
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(Duration::from_millis(50), client.read(&mut sink)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_hosts_and_subdomains() {
        let allow = vec!["pypi.org".to_string(), "*.pythonhosted.org".to_string()];
        assert!(allowed(&allow, "pypi.org"));
        assert!(allowed(&allow, "PyPI.org."));
        assert!(allowed(&allow, "files.pythonhosted.org"));
        assert!(!allowed(&allow, "pythonhosted.org"));
        assert!(!allowed(&allow, "evilpypi.org"));
        assert!(!allowed(&allow, "pypi.org.evil.com"));
    }

    #[tokio::test]
    async fn refuses_what_is_not_allowed_and_tunnels_what_is() {
        // An "upstream" on loopback stands in for an allowed registry.
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let up_port = upstream.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = upstream.accept().await {
                let mut buf = [0u8; 5];
                let _ = s.read_exact(&mut buf).await;
                let _ = s.write_all(b"world").await;
            }
        });
        let proxy = EgressProxy::start("127.0.0.1".parse().expect("ip"), vec!["localhost".into()])
            .await
            .expect("proxy");

        // Not allowed: another host.
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        c.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            .await
            .expect("write");
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.expect("read");
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
        assert_eq!(proxy.refused(), vec!["example.com:443"]);

        // Not allowed: an allowed host on another port.
        let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
        c.write_all(format!("CONNECT localhost:{up_port} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.expect("read");
        assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    }
}
