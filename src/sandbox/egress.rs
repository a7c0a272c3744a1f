//! The allowlisting HTTP proxy that is a `prepare` container's only way out.
//!
//! It runs in a sidecar container of its own (`cordon-egress`, see `sandbox::sidecar` and, for
//! its settings, `docker::config::egress_proxy_body`) on two networks: the job's internal
//! network, where the `prepare` container reaches it and nothing else, and the engine's
//! default bridge, its way out. So it works wherever the engine is, local or remote, and
//! cordon need not run on the engine's host. It serves `CONNECT host:port` (HTTPS, tunnelled
//! untouched: TLS stays end to end) and absolute-URI HTTP requests, and only:
//!
//! - for destinations on the job's allowlist (itself within the operator's), on ports 80 and
//!   443 unless an entry names another port; an IP address only where one is listed;
//! - to public addresses: the proxy resolves each name itself and refuses loopback, private,
//!   link-local (cloud metadata), CGNAT, ULA, multicast and unspecified addresses unless the
//!   operator listed the host as internal; it connects to the address it checked, so a second
//!   answer from DNS cannot rebind the connection;
//! - one request per plain-HTTP connection (sent upstream with `Connection: close`, its body
//!   forwarded by `Content-Length` only), so every request is checked;
//! - request heads of at most [`MAX_HEAD`] bytes, read within [`HEAD_TIMEOUT`], and at most
//!   [`ProxyConfig::max_connections`] connections at once.
//!
//! An upstream proxy the operator configured (`HTTPS_PROXY`/`HTTP_PROXY`, `NO_PROXY` in
//! cordon's environment, handed to the sidecar) is used for the connections it covers; names
//! are then resolved by that proxy, so only names and listed addresses are checked here.
//!
//! Everything refused gets `403` and is reported (the sidecar prints one JSON line per
//! destination), so the job's result can say what was refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::spec::HostRule;

/// Longest request head the proxy reads.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a client has to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Most distinct refused destinations reported per job.
const MAX_REPORTED: usize = 100;

/// What the proxy allows, and how it reaches the outside.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProxyConfig {
    /// The job's allowlist.
    pub allow: Vec<HostRule>,
    /// Hosts the operator allows to resolve to internal addresses.
    pub internal: Vec<HostRule>,
    /// Connections at once; more are refused with `503`. 0 means the default (32).
    #[serde(default)]
    pub max_connections: usize,
    /// The operator's upstream proxy, if any.
    #[serde(default)]
    pub upstream: Upstream,
}

/// An upstream proxy the operator configured (from cordon's own environment).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Upstream {
    /// `host:port` for `CONNECT` (HTTPS) requests.
    pub https: Option<String>,
    /// `host:port` for plain HTTP requests.
    pub http: Option<String>,
    /// Hosts reached directly (`NO_PROXY`): exact names, or `.domain`/`domain` for a domain
    /// and its subdomains.
    pub no_proxy: Vec<String>,
}

impl Upstream {
    /// Reads `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` (either case) through `get`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Upstream, String> {
        let var = |upper: &str| get(upper).or_else(|| get(&upper.to_ascii_lowercase()));
        let addr = |name: &str| -> Result<Option<String>, String> {
            match var(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => proxy_authority(&v)
                    .map(Some)
                    .ok_or_else(|| format!("{name}=`{v}` is not a proxy like http://host:port")),
            }
        };
        Ok(Upstream {
            https: addr("HTTPS_PROXY")?,
            http: addr("HTTP_PROXY")?,
            no_proxy: var("NO_PROXY")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }

    fn bypassed(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        self.no_proxy.iter().any(|n| {
            n == "*" || {
                let d = n.trim_start_matches('.');
                h == d || h.ends_with(&format!(".{d}"))
            }
        })
    }

    fn for_target(&self, host: &str, connect: bool) -> Option<&str> {
        if self.bypassed(host) {
            return None;
        }
        if connect {
            self.https.as_deref()
        } else {
            self.http.as_deref()
        }
    }
}

/// `http://[user@]host:port[/]` → `host:port`. Credentials are not supported.
fn proxy_authority(v: &str) -> Option<String> {
    let rest = v.trim().strip_prefix("http://").unwrap_or(v.trim());
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('@') || rest.contains('/') {
        return None;
    }
    if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        Some(rest.to_string())
    } else {
        Some(format!("{rest}:80"))
    }
}

/// A destination the proxy refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub destination: String,
    pub reason: String,
}

type OnRefused = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// A running proxy; stops when dropped.
pub struct EgressProxy {
    addr: SocketAddr,
    refused: Arc<Mutex<Vec<Refusal>>>,
    stop: CancellationToken,
}

impl EgressProxy {
    /// Starts a proxy on `listen` (port 0 picks one). `on_refused` is called once per newly
    /// refused destination.
    pub async fn start(
        listen: SocketAddr,
        config: ProxyConfig,
        on_refused: Option<OnRefused>,
    ) -> std::io::Result<EgressProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let refused = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let max = match config.max_connections {
            0 => 32,
            n => n,
        };
        let shared = Arc::new(Shared {
            config,
            refused: refused.clone(),
            on_refused,
            slots: Arc::new(Semaphore::new(max)),
        });
        let s = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = s.cancelled() => break,
                    a = listener.accept() => a,
                };
                let Ok((mut client, peer)) = accepted else {
                    continue;
                };
                let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
                    tokio::spawn(async move {
                        let _ = respond(&mut client, "503 Service Unavailable").await;
                    });
                    continue;
                };
                let (shared, stop) = (shared.clone(), s.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        res = serve(client, &shared) => {
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

    /// Destinations refused so far, each once, in order.
    pub fn refused(&self) -> Vec<Refusal> {
        self.refused.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Shared {
    config: ProxyConfig,
    refused: Arc<Mutex<Vec<Refusal>>>,
    on_refused: Option<OnRefused>,
    slots: Arc<Semaphore>,
}

impl Shared {
    fn refuse(&self, destination: &str, reason: String) {
        let r = Refusal {
            destination: destination.to_string(),
            reason,
        };
        let new = match self.refused.lock() {
            Ok(mut v)
                if v.len() < MAX_REPORTED && !v.iter().any(|x| x.destination == r.destination) =>
            {
                v.push(r.clone());
                true
            }
            _ => false,
        };
        if new && let Some(f) = &self.on_refused {
            f(&r);
        }
    }
}

/// Whether connections to `ip` are refused unless the operator listed the host as internal:
/// loopback, unspecified, private (RFC 1918), link-local (where cloud metadata lives), CGNAT,
/// ULA, multicast, broadcast, and IPv6 forms that embed such an IPv4 address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return internal_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            if s[0] == 0x2002 {
                return internal_v4(Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // ULA fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || v6 == Ipv6Addr::UNSPECIFIED
                || s[0..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible ::a.b.c.d
        }
    }
}

fn internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64.0.0/10
        || o[0] >= 240 // reserved
}

/// One request head, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `CONNECT`, `GET`, …
    pub method: String,
    /// The destination host as the client wrote it (brackets removed from IPv6).
    pub host: String,
    pub port: u16,
    /// For plain HTTP: the origin-form path (`/simple/`); `None` for `CONNECT`.
    pub path: Option<String>,
    pub version: String,
    /// Header lines after the request line, as (name, value).
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn is_connect(&self) -> bool {
        self.path.is_none()
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn destination(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is over {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

/// Parses one request head (request line and header lines, ending in an empty line or at the
/// end of `head`). Only what the proxy serves parses: `CONNECT host:port` and absolute-form
/// `http://` requests.
pub fn parse_head(head: &[u8]) -> Result<RequestHead, HeadError> {
    if head.len() > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let text = std::str::from_utf8(head).map_err(|_| HeadError::Malformed("not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed(
            "the request line is not `METHOD TARGET VERSION`",
        ));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HeadError::Malformed("bad method"));
    }
    // Visible ASCII only: a control character (a bare CR above all) in what is forwarded
    // would let a lenient server upstream read a line the proxy never checked.
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HeadError::Malformed(
            "control or non-ASCII byte in the target",
        ));
    }
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(HeadError::Malformed("only HTTP/1.0 and HTTP/1.1"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(HeadError::Malformed("a header line without `:`"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HeadError::Malformed("bad header name"));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(HeadError::Malformed("control character in a header"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let (authority, path) = if method == "CONNECT" {
        (target, None)
    } else {
        let after = target.strip_prefix("http://").ok_or(HeadError::Malformed(
            "only CONNECT and absolute http:// URIs",
        ))?;
        let cut = after.find(['/', '?']).unwrap_or(after.len());
        let (a, p) = after.split_at(cut);
        let p = match p {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        (a, Some(p))
    };
    let (host, port) = split_authority(authority, path.is_some())?;
    Ok(RequestHead {
        method: method.to_string(),
        host,
        port,
        path,
        version: version.to_string(),
        headers,
    })
}

fn split_authority(a: &str, default_80: bool) -> Result<(String, u16), HeadError> {
    if a.contains('@') {
        return Err(HeadError::Malformed("credentials in the authority"));
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or(HeadError::Malformed("unclosed `[`"))?;
        (h, after.strip_prefix(':'))
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(HeadError::Malformed("an IPv6 address needs brackets")),
            None => (a, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or(HeadError::Malformed("bad port"))?,
        None if default_80 => 80,
        None => return Err(HeadError::Malformed("CONNECT needs host:port")),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b))
    {
        return Err(HeadError::Malformed("bad host"));
    }
    Ok((host.to_string(), port))
}

/// Reads up to the end of a request head (`\r\n\r\n` or `\n\n`), at most [`MAX_HEAD`] bytes.
/// Returns the head and whatever followed it in the same reads.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<(Vec<u8>, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = r
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Malformed("read failed"))?;
        if n == 0 {
            return Err(HeadError::Malformed(
                "the client closed before the head ended",
            ));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        let end = find_end(&buf[from..]).map(|e| from + e);
        if let Some(end) = end {
            let rest = buf.split_off(end);
            if buf.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

fn find_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if b[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

async fn serve(mut client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (head, early) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Err(_) => return respond(&mut client, "408 Request Timeout").await,
        Ok(Err(HeadError::TooLarge)) => {
            return respond(&mut client, "431 Request Header Fields Too Large").await;
        }
        Ok(Err(_)) => return respond(&mut client, "400 Bad Request").await,
        Ok(Ok(h)) => h,
    };
    let req = match parse_head(&head) {
        Ok(r) => r,
        Err(HeadError::TooLarge) => {
            return respond(&mut client, "431 Request Header Fields Too Large").await;
        }
        Err(_) => return respond(&mut client, "400 Bad Request").await,
    };
    let dest = req.destination();
    let upstream_proxy = shared
        .config
        .upstream
        .for_target(&req.host, req.is_connect());
    let addr = match check(&shared.config, &req, upstream_proxy.is_some()).await {
        Ok(a) => a,
        Err(reason) => {
            debug!(destination = %dest, %reason, "egress refused");
            shared.refuse(&dest, reason);
            return respond(&mut client, "403 Forbidden").await;
        }
    };
    let connect_to = match (upstream_proxy, addr) {
        (Some(p), _) => p.to_string(),
        (None, Some(a)) => a.to_string(),
        (None, None) => return respond(&mut client, "502 Bad Gateway").await,
    };
    let mut upstream = match tokio::time::timeout(
        Duration::from_secs(20),
        TcpStream::connect(&connect_to),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => return respond(&mut client, "502 Bad Gateway").await,
    };
    debug!(destination = %dest, via = %connect_to, "egress allowed");
    if req.is_connect() {
        if upstream_proxy.is_some() && !upstream_connect(&mut upstream, &dest).await? {
            return respond(&mut client, "502 Bad Gateway").await;
        }
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        if !early.is_empty() {
            upstream.write_all(&early).await?;
        }
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    forward_one_request(client, upstream, &req, early, upstream_proxy.is_some()).await
}

/// Checks a request against the rules; returns the checked address to connect to (`None`
/// when an upstream proxy resolves the name).
async fn check(
    config: &ProxyConfig,
    req: &RequestHead,
    via_proxy: bool,
) -> Result<Option<SocketAddr>, String> {
    if !config.allow.iter().any(|r| r.matches(&req.host, req.port)) {
        return Err("not on the allowlist".into());
    }
    let internal_ok = config
        .internal
        .iter()
        .any(|r| r.matches(&req.host, req.port));
    if let Ok(ip) = req.host.parse::<IpAddr>() {
        // Listed as such (the allowlist matched the literal).
        if is_internal(ip) && !internal_ok {
            return Err(format!("{ip} is an internal address"));
        }
        return Ok(Some(SocketAddr::new(ip, req.port)));
    }
    if via_proxy {
        return Ok(None);
    }
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::lookup_host((req.host.as_str(), req.port)),
    )
    .await
    {
        Ok(Ok(a)) => a.collect(),
        _ => return Err("the name does not resolve".into()),
    };
    addrs
        .iter()
        .find(|a| internal_ok || !is_internal(a.ip()))
        .copied()
        .map(Some)
        .ok_or_else(|| {
            format!(
                "resolves only to internal addresses ({})",
                addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Asks the operator's upstream proxy for a tunnel to `dest`; true when it said 2xx.
async fn upstream_connect(upstream: &mut TcpStream, dest: &str) -> std::io::Result<bool> {
    upstream
        .write_all(format!("CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n\r\n").as_bytes())
        .await?;
    let answer = tokio::time::timeout(HEAD_TIMEOUT, read_head(upstream)).await;
    Ok(
        matches!(answer, Ok(Ok((head, _))) if head.starts_with(b"HTTP/1.1 2") || head.starts_with(b"HTTP/1.0 2")),
    )
}

/// Hop-by-hop headers, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Sends one plain-HTTP request upstream (`Connection: close`, the body by its
/// `Content-Length`), then relays the response until the server closes. Nothing else the
/// client sends is forwarded: a second request would need a connection (and a check) of its
/// own.
async fn forward_one_request(
    mut client: TcpStream,
    mut upstream: TcpStream,
    req: &RequestHead,
    early: Vec<u8>,
    via_proxy: bool,
) -> std::io::Result<()> {
    if req.header("transfer-encoding").is_some() {
        return respond(&mut client, "411 Length Required").await;
    }
    let length: u64 = match req.header("content-length") {
        None => 0,
        Some(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => return respond(&mut client, "400 Bad Request").await,
        },
    };
    let target = if via_proxy {
        format!(
            "http://{}{}",
            req.destination(),
            req.path.as_deref().unwrap_or("/")
        )
    } else {
        req.path.clone().unwrap_or_else(|| "/".into())
    };
    let mut out = format!("{} {target} {}\r\n", req.method, req.version);
    // The host that was checked, not the client's word for it: a `Host: other.example`
    // would ask a shared server (a CDN) for a site off the allowlist.
    let host = if req.port == 80 {
        req.destination().trim_end_matches(":80").to_string()
    } else {
        req.destination()
    };
    out.push_str(&format!("Host: {host}\r\n"));
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("host")
            || HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    let first = early.len().min(length as usize);
    upstream.write_all(&early[..first]).await?;
    let mut rest = (&mut client).take(length - first as u64);
    tokio::io::copy(&mut rest, &mut upstream).await?;
    tokio::io::copy(&mut upstream, &mut client).await?;
    client.shutdown().await
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
mod tests;
