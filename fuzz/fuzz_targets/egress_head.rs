//! One request head a `prepare` container sends the egress proxy: bytes through
//! `cordon::sandbox::egress::parse_head`. It must not panic; what it accepts must be what the
//! proxy can act on safely: a host and port it can check, a destination that reads back as
//! the same, and a request line that, forwarded upstream, says what was checked and nothing
//! more. Then the operator's host rules are matched against it (must not panic either).
#![no_main]

use cordon::sandbox::egress::{self, HeadError, RequestHead};
use cordon::spec::HostRule;
use libfuzzer_sys::fuzz_target;

#[path = "common/known.rs"]
mod known;

const RULES: &[&str] = &[
    "pypi.org",
    "*.pythonhosted.org",
    "deb.debian.org:80",
    "10.0.0.1",
    "[::1]:8080",
    "mirror.internal:3128",
];

fn same_target(a: &RequestHead, b: &RequestHead) -> bool {
    a.method == b.method
        && a.host == b.host
        && a.port == b.port
        && a.path == b.path
        && a.version == b.version
}

fuzz_target!(|data: &[u8]| {
    let head = match egress::parse_head(data) {
        Ok(h) => h,
        Err(HeadError::TooLarge) => {
            assert!(data.len() > egress::MAX_HEAD, "TooLarge for {} bytes", data.len());
            return;
        }
        Err(HeadError::Malformed(_)) => return,
    };

    assert!(!head.method.is_empty() && head.method.bytes().all(|b| b.is_ascii_uppercase()));
    assert!(matches!(head.version.as_str(), "HTTP/1.0" | "HTTP/1.1"));
    assert!(head.port > 0, "port 0 accepted");
    assert!(
        !head.host.is_empty()
            && head
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b)),
        "host {:?} accepted",
        head.host
    );
    assert_eq!(head.is_connect(), head.method == "CONNECT");
    for (name, value) in &head.headers {
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()));
        assert!(
            !value.bytes().any(|b| b.is_ascii_control() && b != b'\t'),
            "header value {value:?}"
        );
    }

    // The destination the proxy logs, checks and dials reads back as the same host and port.
    let dest = head.destination();
    let again = egress::parse_head(format!("CONNECT {dest} HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap_or_else(|e| panic!("destination {dest:?} does not parse back: {e}"));
    assert_eq!((&again.host, again.port), (&head.host, head.port), "via {dest:?}");

    if let Some(path) = &head.path {
        assert!(path.starts_with('/'), "origin-form path {path:?}");
        // `no-ctl-in-target`: the proxy writes the path into the request line it sends
        // upstream (to the origin, or to the operator's upstream proxy) as it came. A control
        // character there (a bare CR above all, which some HTTP parsers take for the end of a
        // line) would let one checked request carry a second, unchecked one.
        if known::check("no-ctl-in-target") {
            assert!(
                !path.bytes().any(|b| b.is_ascii_control() || b == b' '),
                "request target with a control character accepted: {path:?}"
            );
        }
        // As forwarded to an upstream proxy (absolute form; see `forward_one_request`), the
        // request reads back as the same request.
        let mut fwd = format!("{} http://{dest}{path} {}\r\n", head.method, head.version);
        for (name, value) in &head.headers {
            fwd.push_str(&format!("{name}: {value}\r\n"));
        }
        fwd.push_str("Connection: close\r\n\r\n");
        let back = egress::parse_head(fwd.as_bytes())
            .unwrap_or_else(|e| panic!("the forwarded request does not parse: {e}\n{fwd:?}"));
        assert!(same_target(&head, &back), "forwarded as {fwd:?}: {back:?}");
    }

    for r in RULES {
        let rule = HostRule::parse(r).expect("the test's rules parse");
        let _ = rule.matches(&head.host, head.port);
    }
    if let Ok(ip) = head.host.parse() {
        let _ = egress::is_internal(ip);
    }
});
