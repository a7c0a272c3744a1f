//! The web page against a real `cordon serve` and the real engine: driven in Debian's
//! chromium through chromedriver (WebDriver, `fantoccini`) — sign in, the list updating,
//! output while a job runs, the sandbox panel, the cancel button, hostile text shown as text
//! — and, over plain HTTP, the session and CSRF rules a browser session lives under.

mod server_support;

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};
use server_support::*;

const TOKEN: &str = "web-admin-token-0123456789";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process (ours: killed by its pid on drop).
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn chromedriver() -> Driver {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: the web page's tests need Debian's chromium and chromedriver (`apt-get install chromium chromium-driver`)"
        );
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { child, url };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await
            && r.status().is_success()
        {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Headless chromium as root in a VM: no setuid sandbox (`--no-sandbox`, root cannot use
/// it), `/dev/shm` may be small (`--disable-dev-shm-usage`), no GPU.
async fn browser(driver: &Driver, profile: &Path) -> Browser {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // chromedriver's 30 s script timeout failed a `textContent` read while a 2-core host
    // under a model run and CI (load average 11) was still laying out a big output.
    caps.insert(
        "timeouts".into(),
        json!({ "script": 180_000, "pageLoad": 300_000 }),
    );
    let client = ClientBuilder::native()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session through chromedriver");
    let timeouts = client.get_timeouts().await.expect("the session's timeouts");
    assert_eq!(timeouts.script(), Some(Duration::from_secs(180)));
    client
}

/// Runs `body` with a browser, and closes the browser (ending chromium) whatever happens.
async fn with_browser<F, Fut>(body: F)
where
    F: FnOnce(Browser) -> Fut,
    Fut: Future<Output = ()>,
{
    let driver = chromedriver().await;
    let profile = tempfile::tempdir().expect("profile dir");
    let b = browser(&driver, profile.path()).await;
    let outcome = std::panic::AssertUnwindSafe(body(b.clone()))
        .catch_unwind()
        .await;
    let _ = b.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn js(b: &Browser, script: &str) -> Value {
    b.execute(script, vec![]).await.expect("the script runs")
}

/// `document.querySelector(css)?.textContent`, or null.
async fn text_of(b: &Browser, css: &str) -> Option<String> {
    let v = b
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            vec![json!(css)],
        )
        .await
        .expect("the script runs");
    v.as_str().map(str::to_string)
}

/// Clicks the element at `css`, found again while the page replaces it (a live list re-renders
/// its rows: an element found before a refresh is stale by the click, as seen in CI).
async fn click(b: &Browser, css: &str, what: &str) {
    for _ in 0..40 {
        let e = b.find(Locator::Css(css)).await.expect(what);
        match e.click().await {
            Ok(()) => return,
            Err(err) if err.to_string().contains("stale element") => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => panic!("click {what}: {err}"),
        }
    }
    panic!("{what}: still replaced by the page after 40 tries");
}

/// Polls `check` until it holds; panics with `what` (and the page) after a generous bound.
async fn until<F, Fut>(b: &Browser, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check().await {
        if Instant::now() > deadline {
            let body = js(b, "return document.body.innerText").await;
            panic!("{what}: not within 120 s; the page says:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn sign_in(b: &Browser, url: &str) {
    b.goto(&format!("{url}/")).await.expect("open the list");
    until(
        b,
        "the list sends a browser without a session to sign in",
        || async { b.current_url().await.is_ok_and(|u| u.path() == "/sign-in") },
    )
    .await;
    b.find(Locator::Css("#token"))
        .await
        .expect("the token field")
        .send_keys(TOKEN)
        .await
        .expect("type the token");
    click(b, "#go", "the sign-in button").await;
    until(b, "signed in, back on the list", || async {
        text_of(b, "#who")
            .await
            .is_some_and(|t| t.contains("signed in as admin"))
    })
    .await;
    assert_eq!(b.current_url().await.expect("url").path(), "/");
    assert!(!b.current_url().await.expect("url").as_str().contains(TOKEN));
}

fn long_spec(cmd: &str) -> String {
    format!(
        "image: {IMAGE}\nsteps:\n  - name: main\n    run: {}\n    timeout: 600s\nlimits: {{ cpus: 0.5, memory: 256MiB }}\n",
        serde_json::to_string(cmd).expect("json string")
    )
}

/// Signed in through the page: the list shows a job submitted through the API, its page
/// shows its output while it runs, the sandbox panel shows what the engine recorded, and the
/// cancel button cancels it (no container left). Then sign-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_job_and_cancels_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), &format!("token: {TOKEN}\n"));
    let api = srv.client();
    let url = srv.url.clone();
    let port = url.rsplit(':').next().expect("a port").to_string();
    with_browser(|b| async move {
        sign_in(&b, &url).await;
        let cookies = b.get_all_cookies().await.expect("cookies");
        let session = cookies
            .iter()
            .find(|c| c.name() == format!("cordon_session_{port}"))
            .expect("a session cookie");
        assert_eq!(session.http_only(), Some(true));
        assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
        assert_eq!(
            js(&b, "return document.cookie").await,
            "",
            "scripts cannot read the session"
        );

        // The list is open; a job submitted meanwhile appears in it.
        until(&b, "the list has loaded", || async {
            text_of(&b, "#live")
                .await
                .is_some_and(|t| t.starts_with("live"))
        })
        .await;
        let id = api
            .submit_ok(
                &long_spec("echo hello-from-the-job; echo on-stderr >&2; sleep 500"),
                None,
            )
            .await;
        let row = format!("tr[data-id=\"{id}\"] a");
        until(&b, "the new job appears in the list", || async {
            text_of(&b, &row).await.as_deref() == Some(id.as_str())
        })
        .await;

        // Its page: the output arrives while the job is still running.
        click(&b, &row, "the job's link").await;
        until(&b, "the job's output shows while it runs", || async {
            text_of(&b, "#output")
                .await
                .is_some_and(|t| t.contains("hello-from-the-job") && t.contains("on-stderr"))
        })
        .await;
        let st = api.status(&id).await;
        assert_eq!(
            st["state"], "running",
            "the output came before the end: {st}"
        );
        assert_eq!(
            text_of(&b, "#output .stderr").await.as_deref(),
            Some("on-stderr\n")
        );

        // The sandbox panel: what the engine recorded, as the job's own event says.
        let event = api.wait_event(&id, "sandbox").await;
        assert_eq!(event["step"], "main");
        let applied = event["applied"].clone();
        let field =
            |name: &str| format!(".sandbox[data-step=\"main\"] tr[data-field=\"{name}\"] td");
        until(&b, "the sandbox panel is filled", || async {
            text_of(&b, &field("runtime")).await.is_some()
        })
        .await;
        for (name, key) in [
            ("runtime", "runtime"),
            ("user", "user"),
            ("network", "network"),
            ("seccomp", "seccomp"),
        ] {
            assert_eq!(
                text_of(&b, &field(name)).await.as_deref(),
                applied[key].as_str(),
                "{name}"
            );
        }
        assert_eq!(
            text_of(&b, &field("network")).await.as_deref(),
            Some("none")
        );
        assert_eq!(
            text_of(&b, &field("root filesystem")).await.as_deref(),
            Some("read-only")
        );
        assert_eq!(
            text_of(&b, &field("capabilities dropped")).await.as_deref(),
            Some("ALL")
        );

        // Cancel.
        click(&b, "#cancel", "the cancel button").await;
        until(&b, "the page shows the job cancelled", || async {
            text_of(&b, "#outcome").await.as_deref() == Some("cancelled")
        })
        .await;
        let st = api.status(&id).await;
        assert_eq!(st["state"], "finished");
        assert_eq!(st["outcome"], "cancelled");
        assert!(containers_of(&id).is_empty(), "no container of {id} left");
        assert_eq!(
            js(&b, "return document.getElementById('cancel').hidden").await,
            true
        );

        // Sign out: back to the sign-in page, and the list sends us there again.
        click(&b, "#sign-out", "sign out").await;
        until(&b, "signed out", || async {
            b.current_url().await.is_ok_and(|u| u.path() == "/sign-in")
        })
        .await;
        let (code, _) = srv_session(&url, &b).await;
        assert_eq!(code, 401, "the session is over");
    })
    .await;
}

/// `GET /web/session` from inside the page (the cookie goes along).
async fn srv_session(_url: &str, b: &Browser) -> (u64, Value) {
    let v = b
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/web/session').then(r => done(r.status)).catch(e => done(String(e)));",
            vec![],
        )
        .await
        .expect("fetch runs");
    (v.as_u64().unwrap_or(0), v)
}

/// What a submitter writes (output with markup and escape sequences, artifact names, test
/// names in its JUnit report) is shown as text: no element is made from it, no script runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_is_shown_as_text() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), &format!("token: {TOKEN}\n"));
    let api = srv.client();
    let junit = r#"<testsuite tests="1" failures="1"><testcase classname="t" name="&lt;img src=x onerror=window.__xss=4&gt;"><failure message="m"/></testcase></testsuite>"#;
    let cmd = format!(
        "printf '%s\\n' '<script>window.__xss=1</script>' '<img src=x onerror=\"window.__xss=2\">'; \
         printf '\\033[31mred\\033[0m plain\\n'; \
         mkdir -p /out/a; echo x > '/out/a/<img src=x onerror=window.__xss=3>.txt'; \
         printf '%s' '{junit}' > /out/a/junit.xml; exit 1"
    );
    let spec = format!("{}artifacts: [/out/a]\n", long_spec(&cmd));
    let id = api.submit_ok(&spec, None).await;
    let st = api
        .wait_state(&id, "finished", Duration::from_secs(120))
        .await;
    assert_eq!(st["outcome"], "failed", "{st}");
    let url = srv.url.clone();
    with_browser(|b| async move {
        sign_in(&b, &url).await;
        b.goto(&format!("{url}/jobs/{id}")).await.expect("the job's page");
        until(&b, "the result is shown", || async {
            text_of(&b, "#outcome").await.as_deref() == Some("failed")
        })
        .await;
        until(&b, "the artifacts are listed", || async {
            js(&b, "return document.querySelectorAll('#artifacts a').length").await == 2
        })
        .await;
        let out = text_of(&b, "#output").await.expect("output");
        assert!(out.contains("<script>window.__xss=1</script>"), "{out}");
        assert!(out.contains("<img src=x onerror=\"window.__xss=2\">"), "{out}");
        assert!(out.contains("red plain"), "escape sequences are dropped: {out:?}");
        assert!(!out.contains('\u{1b}'), "{out:?}");
        let failing = text_of(&b, "#failing").await.expect("failing tests");
        assert!(failing.contains("<img src=x onerror=window.__xss=4>"), "{failing}");
        let links = js(
            &b,
            "return [...document.querySelectorAll('#artifacts a')].map(a => [a.textContent, a.getAttribute('href')])",
        )
        .await;
        let img = links
            .as_array()
            .expect("links")
            .iter()
            .find(|l| l[0].as_str().is_some_and(|t| t.contains("<img")))
            .expect("the artifact named like a tag")
            .clone();
        assert_eq!(img[0], "a/<img src=x onerror=window.__xss=3>.txt");
        // The link downloads it through the API, with the browser's session.
        let href = img[1].as_str().expect("href").to_string();
        assert!(href.starts_with(&format!("/v1/jobs/{id}/artifacts/")), "{href}");
        let fetched = b
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch(arguments[0]).then(async r => done([r.status, await r.text(), r.headers.get('content-disposition')]));",
                vec![json!(href)],
            )
            .await
            .expect("download");
        assert_eq!(fetched, json!([200, "x\n", "attachment"]));

        assert_eq!(
            js(&b, "return document.querySelectorAll('main img, main script').length").await,
            0,
            "no element was made from the job's text"
        );
        assert_eq!(js(&b, "return window.__xss === undefined").await, true);
    })
    .await;
}

/// A job writing more output than the page keeps: the page holds the last 1 Mi characters,
/// says how much it left out, and still shows the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_keeps_the_tail_of_a_big_output() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), &format!("token: {TOKEN}\n"));
    let api = srv.client();
    // 3 MB of lines, then a last one.
    let id = api
        .submit_ok(
            &long_spec("yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 3000000; echo THE-END"),
            None,
        )
        .await;
    let st = api
        .wait_state(&id, "finished", Duration::from_secs(120))
        .await;
    assert_eq!(st["outcome"], "passed", "{st}");
    let url = srv.url.clone();
    with_browser(|b| async move {
        sign_in(&b, &url).await;
        b.goto(&format!("{url}/jobs/{id}"))
            .await
            .expect("the job's page");
        until(&b, "the whole stream was read", || async {
            text_of(&b, "#output")
                .await
                .is_some_and(|t| t.contains("THE-END"))
                && text_of(&b, "#outcome").await.as_deref() == Some("passed")
        })
        .await;
        let kept = js(
            &b,
            "return document.getElementById('output').textContent.length",
        )
        .await;
        let kept = kept.as_u64().expect("a length");
        assert!(kept <= 1 << 20, "{kept} characters in the page");
        assert!(kept > 1 << 19, "it keeps the tail, not nothing: {kept}");
        let note = text_of(&b, "#omitted").await.expect("the note");
        assert!(
            note.contains("are not shown") && note.contains(&format!("cordon logs {id}")),
            "{note}"
        );
        assert_eq!(
            js(&b, "return document.getElementById('omitted').hidden").await,
            false
        );
    })
    .await;
}

// --- plain HTTP: the session and CSRF rules -------------------------------------------------

/// Signs in over HTTP; returns the `Cookie` header value and the CSRF token.
async fn http_sign_in(url: &str) -> (String, String) {
    let r = reqwest::Client::new()
        .post(format!("{url}/web/session"))
        .json(&json!({ "token": format!("  {TOKEN}\n") }))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), 201);
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain http: {set}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["name"], "admin");
    let cookie = set.split(';').next().expect("name=value").to_string();
    (cookie, body["csrf"].as_str().expect("csrf").to_string())
}

/// A cookie request changes nothing without the session's CSRF token, nor from another
/// site's page even with it; with both it works, as bearer clients always do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_requests_need_the_csrf_token_and_this_site() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), &format!("token: {TOKEN}\n"));
    let (cookie, csrf) = http_sign_in(&srv.url).await;
    let http = reqwest::Client::new();
    let post = |extra: &[(&str, &str)]| {
        let mut r = http
            .post(format!("{}/v1/jobs", srv.url))
            .header("cookie", &cookie)
            .header("content-type", "application/yaml")
            .body(spec("sleep 300"));
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r.send()
    };
    let kind = |v: Value| v["error"]["kind"].as_str().unwrap_or_default().to_string();

    // GETs need only the cookie.
    let r = http
        .get(format!("{}/v1/jobs", srv.url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 200);

    let r = post(&[]).await.expect("post");
    assert_eq!(r.status(), 403);
    assert_eq!(kind(r.json().await.expect("json")), "csrf");
    let r = post(&[("x-cordon-csrf", "not-the-token")])
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    // A form of another site, even if the browser sent the cookie and the page somehow had
    // the token: the front door refuses it first.
    for (h, v) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = post(&[(h, v), ("x-cordon-csrf", &csrf)])
            .await
            .expect("post");
        assert_eq!(r.status(), 403, "{h}: {v}");
        assert_eq!(kind(r.json().await.expect("json")), "forbidden");
    }
    let origin = srv.url.clone();
    let r = post(&[
        ("x-cordon-csrf", &csrf),
        ("origin", &origin),
        ("sec-fetch-site", "same-origin"),
    ])
    .await
    .expect("post");
    assert_eq!(r.status(), 202, "the page's own request");
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(srv.client().status(&id).await["submitted_by"], "admin");

    let delete = |extra: Option<&str>| {
        let mut r = http
            .delete(format!("{}/v1/jobs/{id}", srv.url))
            .header("cookie", &cookie);
        if let Some(t) = extra {
            r = r.header("x-cordon-csrf", t);
        }
        r.send()
    };
    let r = delete(None).await.expect("delete");
    assert_eq!(r.status(), 403);
    assert_ne!(srv.client().status(&id).await["outcome"], "cancelled");
    let r = delete(Some(&csrf)).await.expect("delete");
    assert_eq!(r.status(), 200);
    let st = srv
        .client()
        .wait_state(&id, "finished", Duration::from_secs(60))
        .await;
    assert_eq!(st["outcome"], "cancelled");

    // A bearer client is unaffected: no cookie, no CSRF token.
    let (code, _) = srv.client().submit(&spec("true"), None).await;
    assert_eq!(code, 202);
}

/// No token is taken from a URL; sign-in takes JSON only; a wrong token opens nothing; the
/// session dies at sign-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_travel_in_urls_and_sessions_end_at_sign_out() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), &format!("token: {TOKEN}\n"));
    let http = reqwest::Client::new();
    for path in [
        format!("/v1/jobs?token={TOKEN}"),
        format!("/v1/jobs?access_token={TOKEN}"),
        format!("/web/session?token={TOKEN}"),
        format!("/metrics?token={TOKEN}"),
    ] {
        let r = http
            .get(format!("{}{path}", srv.url))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.headers().get("set-cookie").is_none(), "{path}");
    }
    let r = http
        .get(format!("{}/sign-in?token={TOKEN}", srv.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "the page itself");
    assert!(r.headers().get("set-cookie").is_none());
    // The sign-in form's fallback (a form post) is refused: JSON only.
    let r = http
        .post(format!("{}/web/session", srv.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 415);
    assert!(r.headers().get("set-cookie").is_none());
    let r = http
        .post(format!("{}/web/session", srv.url))
        .json(&json!({ "token": "not-a-token-of-this-service" }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    let (cookie, csrf) = http_sign_in(&srv.url).await;
    let session = || {
        http.get(format!("{}/web/session", srv.url))
            .header("cookie", &cookie)
            .send()
    };
    assert_eq!(session().await.expect("get").status(), 200);
    // Sign-out needs the CSRF token too.
    let r = http
        .delete(format!("{}/web/session", srv.url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 403);
    assert_eq!(session().await.expect("get").status(), 200);
    let r = http
        .delete(format!("{}/web/session", srv.url))
        .header("cookie", &cookie)
        .header("x-cordon-csrf", &csrf)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    let cleared = r.headers()["set-cookie"].to_str().expect("ascii");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(session().await.expect("get").status(), 401);
    let r = http
        .get(format!("{}/v1/jobs", srv.url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401, "the API refuses the old cookie");
}

/// Every response carries the CSP and the other browser headers; pages and scripts are the
/// service's own; a page opens from a link on another site, but not under another name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_served_with_a_strict_policy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let srv = start(&tmp.path().join("data"), &format!("token: {TOKEN}\n"));
    let http = reqwest::Client::new();
    for (path, ctype) in [
        ("/", "text/html"),
        ("/sign-in", "text/html"),
        ("/jobs/job-0123", "text/html"),
        ("/assets/job.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/v1/jobs", "application/json"),
        ("/healthz", "text/plain"),
    ] {
        let r = http
            .get(format!("{}{path}", srv.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with(ctype),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    }
    let r = http
        .get(format!("{}/assets/nope.js", srv.url))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    // A link from another site opens a page (it holds no data; the cookie stays behind)…
    let r = http
        .get(format!("{}/jobs/job-0123", srv.url))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    // …but not under a name that is not the service's (DNS rebinding).
    let r = http
        .get(format!("{}/", srv.url))
        .header("host", "evil.example")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    // The session endpoints keep the whole front door.
    let r = http
        .get(format!("{}/web/session", srv.url))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{}/web/session", srv.url))
        .header("origin", "https://evil.example")
        .json(&json!({ "token": TOKEN }))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403, "no sign-in from another site's page");
    assert!(r.headers().get("set-cookie").is_none());
    for (m, p) in cordon::server::web::WEB_ROUTES {
        assert!(
            !cordon::server::api::ROUTES.contains(&(m, p)),
            "{m} {p} is a web route, not an API route"
        );
    }
}
