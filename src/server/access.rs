//! The service's front door: who may call it and from where, and the privacy of what it keeps.
//!
//! Everything a submitter sends is hostile; the operator (the configuration) is trusted.
//!
//! - **Tokens.** A request carries a bearer token; [`Tokens::check`] finds whose it is (a
//!   [`Caller`]: the token's name and whether it is an admin), comparing SHA-256 digests in
//!   constant time against every configured token. With none configured, the service makes
//!   one at first start ([`ensure_token`]) in `<data_dir>/token` (mode 0600) and reuses it.
//! - **Not a browser.** [`front_door`] refuses a request whose `Host` is not one of the
//!   service's names (DNS rebinding), whose `Origin` is another site's or `null` (a form or
//!   script on any web page), or whose `Sec-Fetch-Site` says a browser sent it from another
//!   site. Command-line clients send no `Origin`.
//! - **Browser sessions.** The web page signs in with a token and then holds a session
//!   cookie (`super::web`); [`Tokens::by_digest`] ties each session to its token, and a
//!   state-changing request from the page must also carry its session's CSRF token
//!   ([`csrf_matches`]).
//! - **Data at rest.** The data directory is 0700 and what cordon writes in it 0600 (files)
//!   or 0700 (directories), whatever the umask: [`secure_data_dir`] at start,
//!   [`tighten_tree`] for a job's files.
//!
//! No HTTP types here: the API layer passes header values in.

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::{ConfigError, ServerConfig};

/// The name of the generated token's file in the data directory.
pub const TOKEN_FILE: &str = "token";
/// The name of the single `token` / `token_file` / `CORDON_TOKEN` token, and of a generated one.
pub const ADMIN_NAME: &str = "admin";

/// Who sent a request: the name of the token it carried, and whether that token is an admin's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub admin: bool,
}

impl Caller {
    /// An admin sees every job; any other token only the jobs it submitted. Jobs stored before
    /// submitters were recorded (`None`) are the admin's.
    pub fn may_see(&self, submitter: Option<&str>) -> bool {
        self.admin || submitter == Some(self.name.as_str())
    }
}

/// The configured tokens, as digests.
pub struct Tokens {
    entries: Vec<(Caller, [u8; 32])>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Tokens {
    /// The tokens of a checked configuration: the single one (named `admin`, an admin) and
    /// every entry of `tokens`.
    pub fn from_config(config: &ServerConfig) -> Tokens {
        let mut entries = Vec::new();
        if let Some(t) = &config.token {
            entries.push((
                Caller {
                    name: ADMIN_NAME.into(),
                    admin: true,
                },
                digest(t),
            ));
        }
        for t in &config.tokens {
            if let Some(secret) = &t.token {
                entries.push((
                    Caller {
                        name: t.name.clone(),
                        admin: t.admin,
                    },
                    digest(secret),
                ));
            }
        }
        Tokens { entries }
    }

    /// Whose token `given` is, if anyone's. Every entry is compared (in constant time, on
    /// digests, so neither the position of a match nor a token's length shows in the timing).
    pub fn check(&self, given: &str) -> Option<Caller> {
        let d = digest(given);
        let mut found = None;
        for (caller, want) in &self.entries {
            if bool::from(d.ct_eq(want)) {
                found = Some(caller.clone());
            }
        }
        found
    }

    /// Like [`Tokens::check`], with the matching token's digest: what a browser session
    /// keeps instead of the secret (see `super::web`).
    pub(crate) fn identify(&self, given: &str) -> Option<(Caller, [u8; 32])> {
        let d = digest(given);
        self.check(given).map(|c| (c, d))
    }

    /// The caller whose token has digest `d`, if that token is still configured: a browser
    /// session asks this at every request, so it never outlives its token.
    pub(crate) fn by_digest(&self, d: &[u8; 32]) -> Option<Caller> {
        let mut found = None;
        for (caller, want) in &self.entries {
            if bool::from(d.ct_eq(want)) {
                found = Some(caller.clone());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tokens' names, admins marked: `admin (admin), ci`.
    pub fn describe(&self) -> String {
        self.entries
            .iter()
            .map(|(c, _)| {
                if c.admin {
                    format!("{} (admin)", c.name)
                } else {
                    c.name.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A host name (or IP address; IPv6 in brackets) and maybe a port, as in `Host` or a
/// `server_names` entry. The host is kept lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: Option<u16>,
}

impl Authority {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`. Nothing else: no scheme, path, user.
    pub fn parse(s: &str) -> Option<Authority> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest.split_once(']')?;
            if inside.is_empty()
                || !inside
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return None;
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (format!("[{inside}]"), port)
        } else {
            let (host, port) = match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            {
                return None;
            }
            (host.to_string(), port)
        };
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
                Some(p.parse::<u16>().ok()?)
            }
            Some(_) => return None,
        };
        Some(Authority {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// The names the service answers to (`server_names`): a `Host` header must match one. An
/// entry with a port matches that port only (a `Host` without a port means 80); one without a
/// port matches the name on any port.
#[derive(Debug, Clone)]
pub struct ServerNames {
    names: Vec<Authority>,
}

impl ServerNames {
    /// `configured` (already checked), or by default the listen address's host (unless it is
    /// the unspecified address), `localhost`, `127.0.0.1` and `[::1]`, each with the port the
    /// service is bound to.
    pub fn new(configured: &[String], bound: SocketAddr) -> ServerNames {
        let names = if configured.is_empty() {
            let port = Some(bound.port());
            let mut hosts = Vec::new();
            if !bound.ip().is_unspecified() {
                hosts.push(match bound {
                    SocketAddr::V4(a) => a.ip().to_string(),
                    SocketAddr::V6(a) => format!("[{}]", a.ip()),
                });
            }
            for h in ["localhost", "127.0.0.1", "[::1]"] {
                if !hosts.iter().any(|x| x == h) {
                    hosts.push(h.to_string());
                }
            }
            hosts
                .into_iter()
                .map(|host| Authority { host, port })
                .collect()
        } else {
            configured
                .iter()
                .filter_map(|s| Authority::parse(s))
                .collect()
        };
        ServerNames { names }
    }

    pub fn matches(&self, host: &Authority) -> bool {
        self.names
            .iter()
            .any(|n| n.host == host.host && n.port.is_none_or(|p| p == host.port.unwrap_or(80)))
    }

    pub fn describe(&self) -> String {
        self.names
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a request was refused at the front door: the header, and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub header: &'static str,
    pub message: String,
}

/// The headers the front door looks at, as sent (`None`: absent). A header that is not
/// visible ASCII, or sent more than once, should be passed as [`Header::Unreadable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header<'a> {
    Absent,
    Value(&'a str),
    Unreadable,
}

/// Decides whether a request may come in: `Ok` for a client that is not a web page of
/// another site. The probes (`/healthz`, `/readyz`) are not asked (Kubernetes sends the
/// pod's IP as `Host`).
///
/// - `Host` must be one of `names` (absent or unreadable: refused). This stops DNS rebinding:
///   a page of `evil.example` whose name was re-pointed at the service still sends
///   `Host: evil.example`.
/// - `Origin`, if present, must be this service's own origin: `http` or `https` and the same
///   host and port as `Host`. `null` (sandboxed pages, files, some redirects and form posts)
///   is refused.
/// - `Sec-Fetch-Site: cross-site` or `same-site` (a browser saying another site made the
///   request) is refused.
pub fn front_door(
    names: &ServerNames,
    host: Header<'_>,
    origin: Header<'_>,
    fetch_site: Header<'_>,
) -> Result<(), Refusal> {
    let refuse = |header, message: String| Err(Refusal { header, message });
    let host = match host {
        Header::Value(h) => match Authority::parse(h.trim()) {
            Some(a) if names.matches(&a) => a,
            _ => {
                return refuse(
                    "Host",
                    format!(
                        "refused: `Host: {}` is not one of this service's names (`server_names` in its configuration); a request sent under another name is how a web page reaches a local service (DNS rebinding). If clients reach the service by that name, the operator adds it to `server_names`",
                        h.trim()
                    ),
                );
            }
        },
        Header::Absent | Header::Unreadable => {
            return refuse(
                "Host",
                "refused: the request has no readable `Host` header naming this service".into(),
            );
        }
    };
    match origin {
        Header::Absent => {}
        Header::Unreadable => {
            return refuse(
                "Origin",
                "refused: the request has an unreadable or repeated `Origin` header; cordon serves no other site's pages".into(),
            );
        }
        Header::Value(o) => {
            let o = o.trim();
            let same = o.split_once("://").and_then(|(scheme, rest)| {
                let default = match scheme.to_ascii_lowercase().as_str() {
                    "http" => 80,
                    "https" => 443,
                    _ => return None,
                };
                let a = Authority::parse(rest)?;
                Some(
                    a.host == host.host
                        && a.port.unwrap_or(default) == host.port.unwrap_or(default),
                )
            });
            if same != Some(true) {
                let what = if o.eq_ignore_ascii_case("null") {
                    "`Origin: null` (a sandboxed page, a local file or a redirected form)"
                        .to_string()
                } else {
                    format!("`Origin: {o}`, which is not this service's own origin")
                };
                return refuse(
                    "Origin",
                    format!(
                        "refused: the request comes from another site's web page ({what}); cordon serves only its own page (at `/`). Use `cordon submit` or an HTTP client, which send no Origin"
                    ),
                );
            }
        }
    }
    match fetch_site {
        Header::Value(v)
            if v.trim().eq_ignore_ascii_case("cross-site")
                || v.trim().eq_ignore_ascii_case("same-site") =>
        {
            refuse(
                "Sec-Fetch-Site",
                format!(
                    "refused: the browser says another site made this request (`Sec-Fetch-Site: {}`); cordon serves only its own page (at `/`)",
                    v.trim()
                ),
            )
        }
        _ => Ok(()),
    }
}

/// Whether the CSRF token a browser request carries (`X-Cordon-CSRF`) is its session's:
/// compared as SHA-256 digests in constant time, so neither a prefix nor the length shows in
/// the timing. An absent header is `None` and never matches.
pub fn csrf_matches(session_csrf: &str, given: Option<&str>) -> bool {
    match given {
        Some(g) => bool::from(digest(g.trim()).ct_eq(&digest(session_csrf))),
        None => false,
    }
}

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

fn data_dir_error(dir: &Path, what: &str, e: io::Error) -> ConfigError {
    ConfigError::Invalid {
        field: "data_dir",
        reason: format!(
            "{}: cannot {what}: {e}; give cordon a directory of its own (it must own it, and it is made private: mode 0700)",
            dir.display()
        ),
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Makes the data directory private: creates it 0700 if missing, sets 0700 on it (a directory
/// left 0755 by an older cordon is tightened), and 0600/0700 on what cordon keeps at its top
/// (`cordon.db` and its `-wal`/`-shm`/`-journal`, `token`, `jobs/` and each job's directory).
/// If the directory was not private yet, everything under `jobs/` is tightened too (once: the
/// next start finds it 0700). Files cordon does not know are left alone.
pub fn secure_data_dir(dir: &Path) -> Result<(), ConfigError> {
    let was_private = match fs::metadata(dir) {
        Ok(m) if m.is_dir() => m.mode() & 0o777 == DIR_MODE,
        Ok(_) => {
            return Err(data_dir_error(
                dir,
                "use it",
                io::Error::new(io::ErrorKind::NotADirectory, "it is not a directory"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|e| data_dir_error(dir, "create it", e))?;
            true
        }
        Err(e) => return Err(data_dir_error(dir, "read it", e)),
    };
    set_mode(dir, DIR_MODE).map_err(|e| data_dir_error(dir, "make it private (chmod 0700)", e))?;
    for name in [
        "cordon.db",
        "cordon.db-wal",
        "cordon.db-shm",
        "cordon.db-journal",
        TOKEN_FILE,
    ] {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => set_mode(&path, FILE_MODE)
                .map_err(|e| data_dir_error(dir, &format!("chmod 0600 {name}"), e))?,
            _ => {}
        }
    }
    let jobs = dir.join("jobs");
    match fs::symlink_metadata(&jobs) {
        Ok(m) if m.is_dir() => {
            if was_private {
                set_mode(&jobs, DIR_MODE)
                    .map_err(|e| data_dir_error(dir, "chmod 0700 jobs/", e))?;
                if let Ok(entries) = fs::read_dir(&jobs) {
                    for e in entries.filter_map(Result::ok) {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            let _ = set_mode(&e.path(), DIR_MODE);
                        }
                    }
                }
            } else {
                tighten_tree(&jobs).map_err(|e| data_dir_error(dir, "tighten jobs/", e))?;
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .mode(DIR_MODE)
                .create(&jobs)
                .map_err(|e| data_dir_error(dir, "create jobs/", e))?;
        }
        Err(e) => return Err(data_dir_error(dir, "read jobs/", e)),
    }
    Ok(())
}

/// Sets 0700 on every directory and 0600 on every file under `root` (itself included).
/// Symlinks are neither followed nor changed; entries that vanish meanwhile are skipped.
pub fn tighten_tree(root: &Path) -> io::Result<()> {
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = match entry {
            Ok(e) => e,
            Err(e)
                if e.io_error()
                    .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let t = entry.file_type();
        let want = if t.is_dir() {
            DIR_MODE
        } else if t.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        let mode = match entry.metadata() {
            Ok(m) => m.mode() & 0o7777,
            Err(_) => continue,
        };
        if mode != want {
            match set_mode(entry.path(), want) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// A token cordon generated because none was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedToken {
    pub path: PathBuf,
    /// Made at this start (else: read from an earlier one).
    pub created: bool,
}

/// If the configuration has no token at all (neither `token`/`token_file`/`CORDON_TOKEN` nor
/// `tokens`), uses the one in `<data_dir>/token`, generating it first if it does not exist:
/// 32 random bytes, hex, created with mode 0600 (`O_EXCL`, never loosened and then
/// tightened). It becomes the `admin` token. Call after [`secure_data_dir`].
pub fn ensure_token(config: &mut ServerConfig) -> Result<Option<GeneratedToken>, ConfigError> {
    if config.token.is_some() || !config.tokens.is_empty() {
        return Ok(None);
    }
    let path = config.data_dir.join(TOKEN_FILE);
    let bad = |what: String| ConfigError::Invalid {
        field: "token",
        reason: format!(
            "no token is configured and the generated one in {} {what}; delete the file to have a new one generated at the next start, or configure `token_file`",
            path.display()
        ),
    };
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| bad(format!("cannot be made: no randomness ({e})")))?;
    let fresh = hex::encode(bytes);
    let created = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&path)
    {
        Ok(mut f) => {
            let written = f
                .write_all(format!("{fresh}\n").as_bytes())
                .and_then(|()| f.sync_all());
            if let Err(e) = written {
                let _ = fs::remove_file(&path);
                return Err(bad(format!("cannot be written: {e}")));
            }
            if let Some(parent) = path.parent()
                && let Ok(d) = fs::File::open(parent)
            {
                let _ = d.sync_all();
            }
            true
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(bad(format!("cannot be created: {e}"))),
    };
    let token = if created {
        fresh
    } else {
        let meta = fs::symlink_metadata(&path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        if !meta.is_file() {
            return Err(bad("is not a regular file".into()));
        }
        set_mode(&path, FILE_MODE).map_err(|e| bad(format!("cannot be made 0600: {e}")))?;
        let text = fs::read_to_string(&path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let t = text.trim_end().to_string();
        if t.len() < 16 {
            return Err(bad("is shorter than 16 characters".into()));
        }
        t
    };
    config.token = Some(token);
    Ok(Some(GeneratedToken { path, created }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: Option<&str>) -> Header<'_> {
        v.map_or(Header::Absent, Header::Value)
    }

    fn names() -> ServerNames {
        ServerNames::new(&[], "127.0.0.1:8420".parse().expect("addr"))
    }

    fn door(host: Option<&str>, origin: Option<&str>, site: Option<&str>) -> Result<(), String> {
        front_door(&names(), h(host), h(origin), h(site)).map_err(|r| r.header.to_string())
    }

    #[test]
    fn a_command_line_client_comes_in() {
        for host in [
            "127.0.0.1:8420",
            "localhost:8420",
            "LOCALHOST:8420",
            "[::1]:8420",
        ] {
            assert_eq!(door(Some(host), None, None), Ok(()), "{host}");
        }
        // The service's own origin (a same-origin page, were there one) is fine.
        assert_eq!(
            door(
                Some("localhost:8420"),
                Some("http://localhost:8420"),
                Some("same-origin")
            ),
            Ok(())
        );
        assert_eq!(
            door(Some("127.0.0.1:8420"), None, Some("none")),
            Ok(()),
            "typed into the address bar"
        );
    }

    #[test]
    fn another_host_name_is_refused() {
        for host in [
            Some("evil.example"),
            Some("evil.example:8420"),
            Some("127.0.0.1:9999"),
            Some("localhost"),
            Some("127.0.0.1.evil.example:8420"),
            Some("user@127.0.0.1:8420"),
            Some(""),
            None,
        ] {
            assert_eq!(door(host, None, None), Err("Host".into()), "{host:?}");
        }
        let r = front_door(&names(), Header::Unreadable, Header::Absent, Header::Absent);
        assert_eq!(r.map_err(|r| r.header), Err("Host"));
        let msg = door_message(Some("evil.example"), None);
        assert!(msg.contains("server_names"), "{msg}");
    }

    fn door_message(host: Option<&str>, origin: Option<&str>) -> String {
        front_door(&names(), h(host), h(origin), Header::Absent)
            .expect_err("refused")
            .message
    }

    #[test]
    fn a_web_page_of_another_site_is_refused() {
        let host = Some("127.0.0.1:8420");
        for origin in [
            "https://evil.example",
            "http://evil.example:8420",
            "null",
            "NULL",
            "http://localhost:8420", // another origin than the Host the request names
            "http://127.0.0.1:3000",
            "https://127.0.0.1:8420/",
            "file://",
            "ftp://127.0.0.1:8420",
            "127.0.0.1:8420",
            "",
        ] {
            assert_eq!(
                door(host, Some(origin), None),
                Err("Origin".into()),
                "{origin}"
            );
        }
        assert!(door_message(host, Some("null")).contains("Origin: null"));
        assert!(door_message(host, Some("https://evil.example")).contains("https://evil.example"));
        let r = front_door(
            &names(),
            Header::Value("127.0.0.1:8420"),
            Header::Unreadable,
            Header::Absent,
        );
        assert_eq!(r.map_err(|r| r.header), Err("Origin"));
        for site in ["cross-site", "same-site", "Cross-Site"] {
            assert_eq!(
                door(host, None, Some(site)),
                Err("Sec-Fetch-Site".into()),
                "{site}"
            );
        }
    }

    #[test]
    fn configured_names_replace_the_defaults() {
        let names = ServerNames::new(
            &["cordon.example.com".into(), "build-host:8420".into()],
            "0.0.0.0:8420".parse().expect("addr"),
        );
        let ok = |host: &str, origin: Option<&str>| {
            front_door(
                &names,
                Header::Value(host),
                origin.map_or(Header::Absent, Header::Value),
                Header::Absent,
            )
            .is_ok()
        };
        assert!(ok("cordon.example.com", None));
        assert!(
            ok("cordon.example.com:443", None),
            "a name without a port: any port"
        );
        assert!(ok("build-host:8420", None));
        assert!(!ok("build-host:8421", None));
        assert!(!ok("build-host", None), "no port in Host means 80");
        assert!(
            !ok("127.0.0.1:8420", None),
            "configured names replace the defaults"
        );
        // Behind a TLS proxy that passes Host through.
        assert!(ok("cordon.example.com", Some("https://cordon.example.com")));
        assert!(ok(
            "cordon.example.com",
            Some("https://cordon.example.com:443")
        ));
        assert!(!ok(
            "cordon.example.com",
            Some("https://cordon.example.com:8443")
        ));
        assert!(!ok("cordon.example.com", Some("https://evil.example")));
    }

    #[test]
    fn default_names_follow_the_bound_address() {
        let n = ServerNames::new(&[], "0.0.0.0:1234".parse().expect("addr"));
        assert_eq!(n.describe(), "localhost:1234, 127.0.0.1:1234, [::1]:1234");
        let n = ServerNames::new(&[], "10.1.2.3:80".parse().expect("addr"));
        assert_eq!(
            n.describe(),
            "10.1.2.3:80, localhost:80, 127.0.0.1:80, [::1]:80"
        );
        assert!(n.matches(&Authority::parse("10.1.2.3").expect("parses")));
        let n = ServerNames::new(&[], "[::1]:9".parse().expect("addr"));
        assert_eq!(n.describe(), "[::1]:9, localhost:9, 127.0.0.1:9");
    }

    #[test]
    fn authorities_parse_strictly() {
        assert_eq!(
            Authority::parse("Host.Example:80"),
            Some(Authority {
                host: "host.example".into(),
                port: Some(80)
            })
        );
        assert_eq!(
            Authority::parse("[::1]").map(|a| a.to_string()),
            Some("[::1]".into())
        );
        for bad in [
            "", ":80", "a:", "a:b", "a:70000", "::1", "[::1", "[zz]", "a/b", "a b", "http://a",
            "a@b",
        ] {
            assert_eq!(Authority::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_name_their_caller() {
        let mut c = ServerConfig {
            token: Some("a".repeat(20)),
            ..ServerConfig::default()
        };
        c.tokens.push(super::super::config::NamedToken {
            name: "ci".into(),
            token: Some("c".repeat(20)),
            token_file: None,
            admin: false,
        });
        let t = Tokens::from_config(&c);
        assert_eq!(
            t.check(&"a".repeat(20)),
            Some(Caller {
                name: "admin".into(),
                admin: true
            })
        );
        assert_eq!(t.check(&"c".repeat(20)).map(|c| c.name), Some("ci".into()));
        assert_eq!(t.check(&"c".repeat(19)), None);
        assert_eq!(t.check(""), None);
        assert_eq!(t.describe(), "admin (admin), ci");
        let ci = t.check(&"c".repeat(20)).expect("ci");
        assert!(ci.may_see(Some("ci")));
        assert!(!ci.may_see(Some("admin")));
        assert!(!ci.may_see(None));
        assert!(t.check(&"a".repeat(20)).expect("admin").may_see(None));
    }

    #[test]
    fn csrf_tokens_match_exactly() {
        let want = "0123456789abcdef0123456789abcdef";
        assert!(csrf_matches(want, Some(want)));
        assert!(csrf_matches(
            want,
            Some(" 0123456789abcdef0123456789abcdef ")
        ));
        for bad in [None, Some(""), Some("0123456789abcdef"), Some("x")] {
            assert!(!csrf_matches(want, bad), "{bad:?}");
        }
        let mut longer = want.to_string();
        longer.push('0');
        assert!(!csrf_matches(want, Some(&longer)));
    }

    #[test]
    fn a_session_finds_its_token_by_digest() {
        let c = ServerConfig {
            token: Some("a".repeat(20)),
            ..ServerConfig::default()
        };
        let t = Tokens::from_config(&c);
        let (caller, d) = t.identify(&"a".repeat(20)).expect("known");
        assert_eq!(caller.name, "admin");
        assert_eq!(t.by_digest(&d), Some(caller));
        assert_eq!(t.by_digest(&[0; 32]), None);
        assert!(t.identify("nope-nope-nope-nope").is_none());
        let other = Tokens::from_config(&ServerConfig {
            token: Some("b".repeat(20)),
            ..ServerConfig::default()
        });
        assert_eq!(other.by_digest(&d), None, "a token no longer configured");
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).expect("stat").mode() & 0o7777
    }

    #[test]
    fn a_token_is_generated_once_with_mode_0600() {
        let tmp = tempfile::tempdir().expect("tmp");
        let data = tmp.path().join("data");
        secure_data_dir(&data).expect("secured");
        assert_eq!(mode(&data), 0o700);
        let mut c = ServerConfig {
            data_dir: data.clone(),
            ..ServerConfig::default()
        };
        let g = ensure_token(&mut c).expect("token").expect("generated");
        assert!(g.created);
        assert_eq!(g.path, data.join("token"));
        assert_eq!(mode(&g.path), 0o600);
        let token = c.token.clone().expect("set");
        assert_eq!(token.len(), 64);
        assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
        let mut again = ServerConfig {
            data_dir: data.clone(),
            ..ServerConfig::default()
        };
        let g2 = ensure_token(&mut again).expect("token").expect("reused");
        assert!(!g2.created);
        assert_eq!(again.token, Some(token));
        // A configured token: nothing generated.
        let mut configured = ServerConfig {
            data_dir: data,
            token: Some("x".repeat(16)),
            ..ServerConfig::default()
        };
        assert_eq!(ensure_token(&mut configured).expect("ok"), None);
    }

    #[test]
    fn an_old_open_data_dir_is_tightened() {
        let tmp = tempfile::tempdir().expect("tmp");
        let data = tmp.path().join("data");
        let job = data.join("jobs/job-1/out/sub");
        fs::create_dir_all(&job).expect("mkdir");
        for d in [&data, &data.join("jobs"), &job] {
            set_mode(d, 0o755).expect("chmod");
        }
        fs::write(data.join("cordon.db"), "").expect("db");
        fs::write(job.join("a.txt"), "a").expect("file");
        fs::write(data.join("operator-notes.txt"), "").expect("file");
        for f in ["cordon.db", "operator-notes.txt"] {
            set_mode(&data.join(f), 0o644).expect("chmod");
        }
        set_mode(&job.join("a.txt"), 0o755).expect("chmod");
        let outside = tmp.path().join("outside.txt");
        fs::write(&outside, "").expect("file");
        set_mode(&outside, 0o644).expect("chmod");
        std::os::unix::fs::symlink(&outside, job.join("link")).expect("symlink");
        secure_data_dir(&data).expect("secured");
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("cordon.db")), 0o600);
        assert_eq!(mode(&data.join("jobs")), 0o700);
        assert_eq!(mode(&job), 0o700);
        assert_eq!(mode(&job.join("a.txt")), 0o600);
        assert_eq!(
            mode(&data.join("operator-notes.txt")),
            0o644,
            "files cordon does not know are left alone"
        );
        assert_eq!(mode(&outside), 0o644, "links are not followed");
    }
}
