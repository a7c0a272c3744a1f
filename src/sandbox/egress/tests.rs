use super::*;

fn rules(list: &[&str]) -> Vec<HostRule> {
    list.iter()
        .map(|s| HostRule::parse(s).expect("rule"))
        .collect()
}

/// An "upstream" on loopback that answers each connection with what it read, once.
async fn echo_upstream() -> (u16, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // Read until the client half-closes or is quiet for a moment.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nworld")
                    .await;
                let _ = tx.send(got).await;
            });
        }
    });
    (port, rx)
}

async fn proxy(config: ProxyConfig) -> EgressProxy {
    EgressProxy::start("127.0.0.1:0".parse().expect("addr"), config, None)
        .await
        .expect("proxy")
}

async fn ask(proxy: &EgressProxy, request: &str) -> String {
    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    c.write_all(request.as_bytes()).await.expect("write");
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut resp)).await;
    String::from_utf8_lossy(&resp).into_owned()
}

#[test]
fn heads_parse_connect_and_absolute_form_only() {
    let h = parse_head(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").expect("ok");
    assert_eq!(
        (h.host.as_str(), h.port, h.is_connect()),
        ("pypi.org", 443, true)
    );
    let h = parse_head(b"GET http://deb.debian.org/debian?x HTTP/1.1\r\n\r\n").expect("ok");
    assert_eq!((h.port, h.path.as_deref()), (80, Some("/debian?x")));
    let h = parse_head(b"GET http://[::1]:8080 HTTP/1.0\r\n\r\n").expect("ok");
    assert_eq!(
        (h.host.as_str(), h.port, h.destination()),
        ("::1", 8080, "[::1]:8080".into())
    );
    for bad in [
        &b"GET /relative HTTP/1.1\r\n\r\n"[..],
        b"CONNECT pypi.org HTTP/1.1\r\n\r\n",
        b"CONNECT user@pypi.org:443 HTTP/1.1\r\n\r\n",
        b"CONNECT pypi.org:0 HTTP/1.1\r\n\r\n",
        b"GET http://a b HTTP/1.1\r\n\r\n",
        b"GET https://pypi.org/ HTTP/1.1\r\n\r\n",
        b"CONNECT pypi.org:443 HTTP/2\r\n\r\n",
        b"CONNECT pypi.org:443 HTTP/1.1\r\nX-A: b\x01c\r\n\r\n",
        b"CONNECT ::1:443 HTTP/1.1\r\n\r\n",
        b"GET http://deb.debian.org/x\rHost:evil.example HTTP/1.1\r\n\r\n",
        b"GET http://deb.debian.org/x\x01 HTTP/1.1\r\n\r\n",
        b"GET http://deb.debian.org/\xc3\xa9 HTTP/1.1\r\n\r\n",
        b"\xff\xfe",
    ] {
        assert!(
            parse_head(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let huge = vec![b'A'; MAX_HEAD + 1];
    assert_eq!(parse_head(&huge), Err(HeadError::TooLarge));
}

#[test]
fn internal_addresses_are_recognised_in_every_form() {
    for ip in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "::1",
        "::",
        "fd00:ec2::254",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "::127.0.0.1",
    ] {
        assert!(
            is_internal(ip.parse().expect("ip")),
            "{ip} should be internal"
        );
    }
    for ip in [
        "151.101.0.223",
        "203.0.113.80",
        "2a04:4e42::223",
        "100.128.0.1",
    ] {
        assert!(
            !is_internal(ip.parse().expect("ip")),
            "{ip} should be public"
        );
    }
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_unless_the_operator_listed_it() {
    let (port, mut seen) = echo_upstream().await;
    let allow = rules(&[&format!("localhost:{port}")]);
    let p = proxy(ProxyConfig {
        allow: allow.clone(),
        ..Default::default()
    })
    .await;
    let resp = ask(&p, &format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    let refused = p.refused();
    assert_eq!(refused[0].destination, format!("localhost:{port}"));
    assert!(refused[0].reason.contains("internal"), "{refused:?}");

    // The same literal address: refused as internal too.
    let p = proxy(ProxyConfig {
        allow: rules(&[&format!("127.0.0.1:{port}")]),
        ..Default::default()
    })
    .await;
    let resp = ask(&p, &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");

    // Listed by the operator as internal (an internal mirror): allowed and tunnelled.
    let p = proxy(ProxyConfig {
        allow: allow.clone(),
        internal: allow,
        ..Default::default()
    })
    .await;
    let resp = ask(
        &p,
        &format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\nhello"),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 200 Connection Established"),
        "{resp}"
    );
    assert!(resp.ends_with("world"), "{resp}");
    assert_eq!(seen.recv().await.expect("upstream saw it"), b"hello");
}

#[tokio::test]
async fn only_allowlisted_hosts_and_ports_pass() {
    let p = proxy(ProxyConfig {
        allow: rules(&["pypi.org"]),
        ..Default::default()
    })
    .await;
    for (req, dest) in [
        (
            "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            "example.com:443",
        ),
        ("CONNECT pypi.org:22 HTTP/1.1\r\n\r\n", "pypi.org:22"),
        (
            "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
            "169.254.169.254:80",
        ),
        (
            "GET http://pypi.org.evil.com/ HTTP/1.1\r\n\r\n",
            "pypi.org.evil.com:80",
        ),
    ] {
        let resp = ask(&p, req).await;
        assert!(resp.starts_with("HTTP/1.1 403"), "{req}: {resp}");
        assert!(
            p.refused()
                .iter()
                .any(|r| r.destination == dest && r.reason == "not on the allowlist"),
            "{dest}: {:?}",
            p.refused()
        );
    }
}

#[tokio::test]
async fn an_endless_request_line_is_cut_off_at_the_cap() {
    let p = proxy(ProxyConfig {
        allow: rules(&["pypi.org"]),
        ..Default::default()
    })
    .await;
    let mut c = TcpStream::connect(p.addr()).await.expect("connect");
    let chunk = vec![b'A'; 4096];
    let mut sent = 0usize;
    // The proxy answers and closes after MAX_HEAD bytes; writing stops failing soon after.
    while sent < 64 * MAX_HEAD {
        match tokio::time::timeout(Duration::from_secs(2), c.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), c.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(
        resp.starts_with("HTTP/1.1 431") || sent < 64 * MAX_HEAD,
        "the proxy kept reading: sent {sent} bytes, got {resp:?}"
    );
}

#[tokio::test]
async fn a_plain_http_connection_carries_exactly_one_checked_request() {
    let (port, mut seen) = echo_upstream().await;
    let allow = rules(&[&format!("localhost:{port}")]);
    let p = proxy(ProxyConfig {
        allow: allow.clone(),
        internal: allow,
        ..Default::default()
    })
    .await;
    // A second request (to a host that is not allowed) pipelined behind the first one's body.
    let req = format!(
        "POST http://localhost:{port}/a HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 3\r\nConnection: keep-alive\r\nProxy-Authorization: x\r\n\r\nabc\
         GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    );
    let resp = ask(&p, &req).await;
    assert!(resp.ends_with("world"), "{resp}");
    let got = String::from_utf8(seen.recv().await.expect("upstream")).expect("utf8");
    assert!(got.starts_with("POST /a HTTP/1.1\r\n"), "{got}");
    assert!(got.contains("Connection: close\r\n"), "{got}");
    assert!(
        got.contains(&format!("Host: localhost:{port}\r\n")),
        "the checked host: {got}"
    );
    assert!(
        got.ends_with("\r\n\r\nabc"),
        "exactly the declared body: {got:?}"
    );
    assert!(
        !got.contains("evil")
            && !got.contains("keep-alive")
            && !got.contains("Proxy-Authorization"),
        "{got}"
    );
    let chunked = ask(
        &p,
        &format!(
            "POST http://localhost:{port}/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 411"), "{chunked}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused() {
    let p = proxy(ProxyConfig {
        allow: rules(&["pypi.org"]),
        max_connections: 2,
        ..Default::default()
    })
    .await;
    // Two clients that never finish their heads hold both slots.
    let _a = TcpStream::connect(p.addr()).await.expect("a");
    let _b = TcpStream::connect(p.addr()).await.expect("b");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resp = ask(&p, "CONNECT pypi.org:443 HTTP/1.1\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
}

#[tokio::test]
async fn the_operators_upstream_proxy_carries_what_it_covers() {
    let (port, mut seen) = echo_upstream().await;
    let dest = format!("localhost:{port}");
    // The operator's proxy: its own policy lets it reach the loopback "registry".
    let operator_proxy = proxy(ProxyConfig {
        allow: rules(&[&dest]),
        internal: rules(&[&dest]),
        ..Default::default()
    })
    .await;
    // cordon's proxy does not resolve the name itself: the upstream does.
    let p = proxy(ProxyConfig {
        allow: rules(&[&dest]),
        upstream: Upstream {
            https: Some(operator_proxy.addr().to_string()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let resp = ask(&p, &format!("CONNECT {dest} HTTP/1.1\r\n\r\nhi")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(seen.recv().await.expect("upstream"), b"hi");
    // Its allowlist still applies first.
    let resp = ask(&p, "CONNECT example.com:443 HTTP/1.1\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
}

#[test]
fn the_upstream_comes_from_the_operators_environment() {
    let env = |k: &str| match k {
        "https_proxy" => Some("http://proxy.corp:3128/".to_string()),
        "NO_PROXY" => Some("localhost, .corp".to_string()),
        _ => None,
    };
    let u = Upstream::from_env(env).expect("valid");
    assert_eq!(u.https.as_deref(), Some("proxy.corp:3128"));
    assert_eq!(u.http, None);
    assert_eq!(u.for_target("pypi.org", true), Some("proxy.corp:3128"));
    assert_eq!(u.for_target("mirror.corp", true), None);
    assert!(Upstream::from_env(|k| (k == "HTTPS_PROXY").then(|| "http://u:p@x:1".into())).is_err());
}
