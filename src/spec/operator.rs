//! The operator's policy: the most a job may ask for.
//!
//! cordon has two kinds of principals. The *operator* configures the service (or runs the CLI
//! on their own machine); the *submitter* writes the spec, the repository, the packages a
//! `prepare` installs and the code a test runs. A spec is the submitter's request; this policy
//! is the operator's answer. [`crate::spec::validate`] refuses every request beyond it, naming
//! the field and the ceiling, and never lets a spec name a host path the operator did not
//! configure.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{Size, Span};
use super::{DEFAULT_ALLOW_HOSTS, HOST_CA_BUNDLE};

/// What the operator allows every job (see the module's docs).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorPolicy {
    /// The most a job may ask for, limit by limit.
    #[serde(default)]
    pub max: Ceilings,
    /// Image references a job may name; `*` matches any run of characters. A policy file
    /// that names none allows cordon's own images (`cordon/*`); the CLI without a policy file
    /// allows every local image (they are the operator's own).
    #[serde(default = "service_images")]
    pub allowed_images: Vec<String>,
    #[serde(default)]
    pub egress: EgressPolicy,
    /// The CA bundle a `prepare` gets when its spec says `ca_bundle: host`. Specs never name
    /// a path. `null` refuses `ca_bundle: host`.
    #[serde(default = "host_ca_bundle")]
    pub ca_bundle: Option<PathBuf>,
    /// Whether a profile may run the sandbox as root (uid 0). Off: root is refused whatever
    /// the profile's `cap_add` says.
    #[serde(default)]
    pub allow_root: bool,
}

/// The most a job may ask for. Defaults suit a build host of a few cores and a few GiB; the
/// engine's own size is checked again at preflight.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ceilings {
    #[serde(deserialize_with = "super::units::cpus")]
    pub cpus: f64,
    pub memory: Size,
    pub pids: i64,
    pub nofile: i64,
    /// Of one step.
    pub timeout: Span,
    /// stdout and stderr of the whole job.
    pub output: Size,
    /// Each of the job's tmpfs volumes (workspace, `/out`, `/tmp`).
    pub scratch: Size,
    /// The `prepare`'s own timeout.
    pub prepare_timeout: Span,
    /// What a `prepare` may write to its filesystem (the environment image's layer).
    pub prepare_disk: Size,
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings {
            cpus: 4.0,
            memory: Size::gib(4),
            pids: 4096,
            nofile: 65536,
            timeout: Span(Duration::from_secs(3600)),
            output: Size::mib(64),
            scratch: Size::gib(2),
            prepare_timeout: Span(Duration::from_secs(30 * 60)),
            prepare_disk: Size::gib(4),
        }
    }
}

/// Where a `prepare` may connect, through cordon's egress proxy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressPolicy {
    /// Hosts a job's `prepare.allow_hosts` may list (`host`, `*.domain`, `host:port`; an IP
    /// address only if listed as such). They must resolve to public addresses.
    pub allow_hosts: Vec<String>,
    /// Hosts that may also resolve to loopback, private, link-local, CGNAT or ULA addresses:
    /// an internal package mirror. Jobs may list these too.
    pub internal_hosts: Vec<String>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy {
            allow_hosts: DEFAULT_ALLOW_HOSTS.iter().map(|s| s.to_string()).collect(),
            internal_hosts: Vec::new(),
        }
    }
}

fn service_images() -> Vec<String> {
    vec!["cordon/*".to_string()]
}

fn host_ca_bundle() -> Option<PathBuf> {
    Some(PathBuf::from(HOST_CA_BUNDLE))
}

impl Default for OperatorPolicy {
    /// The service's defaults (see [`OperatorPolicy::for_cli`] for the CLI's).
    fn default() -> Self {
        OperatorPolicy {
            max: Ceilings::default(),
            allowed_images: service_images(),
            egress: EgressPolicy::default(),
            ca_bundle: host_ca_bundle(),
            allow_root: false,
        }
    }
}

impl OperatorPolicy {
    /// The CLI's defaults: the same ceilings as the service, every local image.
    pub fn for_cli() -> Self {
        OperatorPolicy {
            allowed_images: vec!["*".to_string()],
            ..OperatorPolicy::default()
        }
    }

    /// Reads a policy file (YAML), as `cordon run --policy` and `CORDON_POLICY` name it.
    pub fn load(path: &std::path::Path) -> Result<Self, super::SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| super::SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let policy: OperatorPolicy = super::parse_yaml(&text, path)?;
        policy
            .check()
            .map_err(|(field, reason)| super::SpecError::Invalid {
                path: path.to_path_buf(),
                field,
                reason,
            })?;
        Ok(policy)
    }

    /// Checks the policy itself: host rules parse, ceilings are positive.
    pub fn check(&self) -> Result<(), (String, String)> {
        for (list, field) in [
            (&self.egress.allow_hosts, "egress.allow_hosts"),
            (&self.egress.internal_hosts, "egress.internal_hosts"),
        ] {
            for (i, h) in list.iter().enumerate() {
                HostRule::parse(h).map_err(|r| (format!("{field}[{i}]"), r))?;
            }
        }
        for (i, p) in self.allowed_images.iter().enumerate() {
            super::pattern::image(p).map_err(|r| (format!("allowed_images[{i}]"), r))?;
        }
        if !(self.max.cpus > 0.0 && self.max.cpus.is_finite()) {
            return Err(("max.cpus".into(), "must be a number of cores > 0".into()));
        }
        Ok(())
    }

    /// Whether a job may name `image`.
    pub fn image_allowed(&self, image: &str) -> bool {
        self.allowed_images.iter().any(|p| {
            super::pattern::image(p)
                .map(|g| g.is_match(image))
                .unwrap_or(false)
        })
    }

    /// The operator's egress rules: every host a job may list.
    pub fn egress_rules(&self) -> Vec<HostRule> {
        self.egress
            .allow_hosts
            .iter()
            .chain(&self.egress.internal_hosts)
            .filter_map(|h| HostRule::parse(h).ok())
            .collect()
    }

    /// The rules whose hosts may resolve to internal addresses.
    pub fn internal_rules(&self) -> Vec<HostRule> {
        self.egress
            .internal_hosts
            .iter()
            .filter_map(|h| HostRule::parse(h).ok())
            .collect()
    }
}

/// One entry of an egress allowlist: which host, which ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRule {
    pub host: RuleHost,
    /// `None`: 80 and 443.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleHost {
    /// A host name, lower case, without a trailing dot.
    Name(String),
    /// `*.domain`: any name under `domain` (not `domain` itself).
    Suffix(String),
    /// An IP address, listed as such.
    Ip(IpAddr),
}

impl HostRule {
    /// Parses `host`, `*.domain`, `1.2.3.4`, `[::1]`, each optionally with `:port`.
    pub fn parse(text: &str) -> Result<HostRule, String> {
        let bad = |why: &str| format!("`{text}` is not a host rule: {why}");
        let t = text.trim();
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address in brackets lacks `]`"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("expected `:port`"))?),
            };
            (ip, port)
        } else if t.matches(':').count() > 1 {
            (t, None) // a bare IPv6 address
        } else {
            match t.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (t, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(bad("the port must be 1..65535")),
            },
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(HostRule {
                host: RuleHost::Ip(ip),
                port,
            });
        }
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        let (suffix, name) = match lower.strip_prefix("*.") {
            Some(d) => (true, d.to_string()),
            None => (false, lower),
        };
        let labels_ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !labels_ok {
            return Err(bad("use a host name, `*.domain`, or an IP address"));
        }
        // A name that is all digits and dots is an address in disguise (`127.1`, `2130706433`).
        let last = name.rsplit('.').next().unwrap_or_default();
        if last.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(
                "a name whose last label is numeric is read as an IP address by resolvers",
            ));
        }
        Ok(HostRule {
            host: if suffix {
                RuleHost::Suffix(name)
            } else {
                RuleHost::Name(name)
            },
            port,
        })
    }

    fn ports_cover(&self, other: Option<u16>) -> bool {
        match (self.port, other) {
            (None, None) => true,
            (None, Some(p)) => p == 80 || p == 443,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        }
    }

    /// Whether this rule allows everything `other` allows.
    pub fn covers(&self, other: &HostRule) -> bool {
        if !self.ports_cover(other.port) {
            return false;
        }
        match (&self.host, &other.host) {
            (RuleHost::Ip(a), RuleHost::Ip(b)) => a == b,
            (RuleHost::Name(a), RuleHost::Name(b)) => a == b,
            (RuleHost::Suffix(d), RuleHost::Name(n)) => n.ends_with(&format!(".{d}")),
            (RuleHost::Suffix(d), RuleHost::Suffix(e)) => e == d || e.ends_with(&format!(".{d}")),
            _ => false,
        }
    }

    /// Whether a connection to `host:port` (a name or an IP literal, as the client wrote it)
    /// is allowed by this rule.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let ports_ok = match self.port {
            None => port == 80 || port == 443,
            Some(p) => p == port,
        };
        if !ports_ok {
            return false;
        }
        let host = host.trim_matches(['[', ']']);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return matches!(&self.host, RuleHost::Ip(a) if *a == ip);
        }
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        match &self.host {
            RuleHost::Name(n) => *n == h,
            RuleHost::Suffix(d) => h.ends_with(&format!(".{d}")),
            RuleHost::Ip(_) => false,
        }
    }
}

impl std::fmt::Display for HostRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            RuleHost::Name(n) => write!(f, "{n}")?,
            RuleHost::Suffix(d) => write!(f, "*.{d}")?,
            RuleHost::Ip(IpAddr::V6(ip)) if self.port.is_some() => write!(f, "[{ip}]")?,
            RuleHost::Ip(ip) => write!(f, "{ip}")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> HostRule {
        HostRule::parse(s).expect(s)
    }

    #[test]
    fn rules_parse_names_suffixes_addresses_and_ports() {
        assert_eq!(rule("PyPI.org.").host, RuleHost::Name("pypi.org".into()));
        assert_eq!(
            rule("*.example.org").host,
            RuleHost::Suffix("example.org".into())
        );
        assert_eq!(rule("mirror.corp:3141").port, Some(3141));
        assert_eq!(
            rule("10.0.0.5:8080").host,
            RuleHost::Ip("10.0.0.5".parse().expect("ip"))
        );
        assert_eq!(rule("[::1]:80").port, Some(80));
        assert_eq!(rule("::1").host, RuleHost::Ip("::1".parse().expect("ip")));
        for bad in [
            "",
            "a b",
            "127.1",
            "2130706433",
            "x:0",
            "x:99999",
            "*.",
            "-a.org",
            "[::1",
        ] {
            assert!(HostRule::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_rule_covers_what_is_narrower() {
        assert!(rule("*.pythonhosted.org").covers(&rule("files.pythonhosted.org")));
        assert!(rule("*.org").covers(&rule("*.pythonhosted.org")));
        assert!(!rule("*.pythonhosted.org").covers(&rule("pythonhosted.org")));
        assert!(!rule("pypi.org").covers(&rule("*.pypi.org")));
        assert!(rule("pypi.org").covers(&rule("pypi.org:443")));
        assert!(!rule("pypi.org").covers(&rule("pypi.org:22")));
        assert!(!rule("pypi.org:8080").covers(&rule("pypi.org")));
        assert!(!rule("*.org").covers(&rule("10.0.0.1")));
        assert!(rule("10.0.0.1").covers(&rule("10.0.0.1:443")));
    }

    #[test]
    fn a_rule_matches_destinations() {
        assert!(rule("pypi.org").matches("PYPI.org.", 443));
        assert!(!rule("pypi.org").matches("pypi.org", 8080));
        assert!(rule("mirror:3141").matches("mirror", 3141));
        assert!(!rule("mirror:3141").matches("mirror", 443));
        assert!(!rule("*.org").matches("127.0.0.1", 443));
        assert!(rule("[::1]:80").matches("[::1]", 80));
        assert!(!rule("*.pypi.org").matches("pypi.org.evil.com", 443));
    }

    #[test]
    fn images_match_patterns() {
        let p = OperatorPolicy::default();
        assert!(p.image_allowed("cordon/python:3.11"));
        assert!(!p.image_allowed("cordon-env:abc"));
        assert!(!p.image_allowed("corp/secrets:1"));
        assert!(OperatorPolicy::for_cli().image_allowed("corp/secrets:1"));
    }

    #[test]
    fn a_policy_file_names_what_it_sets_and_defaults_the_rest() {
        let p: OperatorPolicy = crate::spec::parse_yaml(
            "max: { memory: 2GiB }\negress: { internal_hosts: ['mirror.corp:3141'] }\n",
            std::path::Path::new("p.yaml"),
        )
        .expect("valid");
        assert_eq!(p.max.memory, Size::gib(2));
        assert_eq!(p.max.pids, Ceilings::default().pids);
        assert_eq!(p.allowed_images, vec!["cordon/*"]);
        assert!(p.check().is_ok());
        assert_eq!(p.internal_rules(), vec![rule("mirror.corp:3141")]);
    }
}
