//! The conventions of the `cordon` command line, on the real binary and without an engine:
//! shell completions that parse, man pages that are roff, colour as `--color` and `NO_COLOR`
//! say (never in JSON), and an exit status documented in every command's `--help`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn cordon(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cordon"));
    c.args(args)
        .env_remove("NO_COLOR")
        .env_remove("CORDON_POLICY")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("cordon runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn has_escape(b: &[u8]) -> bool {
    b.contains(&0x1b)
}

/// Whether `program` can be run here.
fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn bash_completion_parses_and_knows_the_commands() {
    let out = run(&mut cordon(&["completions", "bash"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    for word in ["run", "submit", "testgen", "completions", "--color"] {
        assert!(script.contains(word), "no {word} in the bash completion");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cordon.bash");
    std::fs::write(&path, &out.stdout).expect("writes");
    let check = run(Command::new("bash").arg("-n").arg(&path));
    assert!(check.status.success(), "bash -n: {}", text(&check.stderr));
}

#[test]
fn every_shell_gets_a_script_and_those_installed_here_parse_it() {
    for (shell, checker) in [
        ("zsh", Some(["zsh", "-n"])),
        ("fish", Some(["fish", "--no-execute"])),
        ("elvish", None),
        ("powershell", None),
    ] {
        let out = run(&mut cordon(&["completions", shell]));
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("testgen"),
            "{shell}: the script does not name the commands"
        );
        if let Some([program, flag]) = checker
            && have(program)
        {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("cordon.completion");
            std::fs::write(&path, &out.stdout).expect("writes");
            let check = run(Command::new(program).arg(flag).arg(&path));
            assert!(check.status.success(), "{program}: {}", text(&check.stderr));
        }
    }
    let out = run(&mut cordon(&["completions", "tcsh"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is invalid input"
    );
}

/// Checks a man page's structure, and has groff read it with every warning on where groff
/// is installed.
fn assert_is_man_page(page: &[u8], name: &str) {
    let roff = text(page);
    let th = roff
        .lines()
        .find(|l| l.starts_with(".TH "))
        .unwrap_or_else(|| panic!("{name}: no .TH line:\n{roff}"));
    assert!(th.starts_with(&format!(".TH {name} 1")), "{th}");
    // Nothing but roff's own preamble before the title.
    for l in roff.lines().take_while(|l| !l.starts_with(".TH ")) {
        assert!(l.starts_with('.'), "{name}: text before .TH: {l}");
    }
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION"] {
        assert!(roff.contains(section), "{name}: no {section}");
    }
    if have("groff") {
        let mut g = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("groff starts");
        use std::io::Write;
        g.stdin
            .take()
            .expect("stdin")
            .write_all(page)
            .expect("feeds groff");
        let out = g.wait_with_output().expect("groff ends");
        assert!(out.status.success(), "{name}: groff failed");
        assert!(
            out.stderr.is_empty(),
            "{name}: groff: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn man_prints_a_roff_page() {
    let out = run(&mut cordon(&["man"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(".ie") || text(&out.stdout).starts_with(".TH"));
    assert_is_man_page(&out.stdout, "cordon");
    assert!(text(&out.stdout).contains("Exit status"));
}

#[test]
fn man_dir_writes_a_page_per_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8 path");
    let out = run(&mut cordon(&["man", "--dir", d]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for name in [
        "cordon",
        "cordon-run",
        "cordon-image-build",
        "cordon-cache-prune",
    ] {
        let page = std::fs::read(dir.path().join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("{name}.1: {e}"));
        assert_is_man_page(&page, name);
    }
    let missing = dir.path().join("no-such-dir");
    let out = run(&mut cordon(&[
        "man",
        "--dir",
        missing.to_str().expect("utf-8"),
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--dir"), "{}", text(&out.stderr));
}

/// Every command and subcommand, as `["image", "build"]`, read from the `Commands:` lists
/// of the help output itself.
fn commands(prefix: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    args.push("--help");
    let out = run(&mut cordon(&args));
    let help = text(&out.stdout);
    let mut found = Vec::new();
    let mut in_list = false;
    for line in help.lines() {
        if line == "Commands:" {
            in_list = true;
            continue;
        }
        if in_list {
            let Some(name) = line
                .strip_prefix("  ")
                .and_then(|l| l.split_whitespace().next())
            else {
                break;
            };
            // Lines of a wrapped description are indented further.
            if line.starts_with("   ") || name == "help" {
                continue;
            }
            let mut cmd = prefix.to_vec();
            cmd.push(name.to_string());
            found.extend(commands(&cmd));
            found.push(cmd);
        }
    }
    found
}

#[test]
fn every_commands_help_documents_its_exit_status() {
    let all = commands(&[]);
    assert!(all.len() >= 18, "too few commands found: {all:?}");
    for c in [
        &["run"][..],
        &["image", "build"],
        &["cache", "prune"],
        &["man"],
    ] {
        assert!(all.iter().any(|x| x == c), "{c:?} not found in {all:?}");
    }
    let mut undocumented = Vec::new();
    for mut cmd in all.into_iter().chain([vec![]]) {
        cmd.push("--help".into());
        let out = run(&mut cordon(
            &cmd.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        assert_eq!(out.status.code(), Some(0), "{cmd:?}");
        if !text(&out.stdout).contains("Exit status") {
            undocumented.push(cmd.join(" "));
        }
    }
    assert!(
        undocumented.is_empty(),
        "no Exit status in: {undocumented:?}"
    );
}

/// A spec that fails validation: `cordon run` stops before it needs an engine.
fn invalid_spec(dir: &Path) -> String {
    let spec = dir.join("job.yaml");
    std::fs::write(&spec, "steps: []\nbogus: 1\n").expect("writes the spec");
    spec.to_str().expect("utf-8 path").to_string()
}

#[test]
fn color_never_and_no_color_mean_no_escapes_and_always_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = invalid_spec(dir.path());

    let plain = run(&mut cordon(&["run", &spec, "--color", "never"]));
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain.stderr));
    assert!(
        text(&plain.stderr).contains("cordon: error: "),
        "{}",
        text(&plain.stderr)
    );
    assert!(!has_escape(&plain.stderr), "{:?}", text(&plain.stderr));

    let mut c = cordon(&["profile", "no-such-profile"]);
    c.env("NO_COLOR", "1");
    let no_color = run(&mut c);
    assert_eq!(no_color.status.code(), Some(2));
    assert!(
        !has_escape(&no_color.stderr),
        "{:?}",
        text(&no_color.stderr)
    );

    // Into a pipe, and with NO_COLOR set: --color always still colours.
    let mut c = cordon(&["run", &spec, "--color=always"]);
    c.env("NO_COLOR", "1");
    let coloured = run(&mut c);
    assert_eq!(coloured.status.code(), Some(2));
    assert!(has_escape(&coloured.stderr), "{:?}", text(&coloured.stderr));

    // Auto into a pipe: no colour.
    let auto = run(&mut cordon(&["profile", "no-such-profile"]));
    assert!(!has_escape(&auto.stderr), "{:?}", text(&auto.stderr));
}

#[test]
fn json_is_never_coloured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = invalid_spec(dir.path());
    let out = run(&mut cordon(&["run", &spec, "--json", "--color", "always"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(has_escape(&out.stderr), "stderr is for people: coloured");
    assert!(!has_escape(&out.stdout), "{:?}", text(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["error"]["kind"], "invalid_input");
}

/// Runs `cordon ARGS` with a terminal for stdout and stderr (util-linux `script`), `env`
/// set; returns what the terminal showed.
fn on_a_terminal(args: &str, env: &[(&str, &str)]) -> Vec<u8> {
    let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_cordon"));
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c).stdout
}

#[test]
fn on_a_terminal_auto_colours_unless_no_color_is_set() {
    if !have("script") {
        panic!("util-linux `script` is needed to give cordon a terminal");
    }
    let auto = on_a_terminal("profile no-such-profile", &[]);
    assert!(has_escape(&auto), "{:?}", text(&auto));
    let no_color = on_a_terminal("profile no-such-profile", &[("NO_COLOR", "1")]);
    assert!(
        text(&no_color).contains("cordon: error:"),
        "{:?}",
        text(&no_color)
    );
    assert!(!has_escape(&no_color), "{:?}", text(&no_color));
    // An empty NO_COLOR does not count (no-color.org).
    let empty = on_a_terminal("profile no-such-profile", &[("NO_COLOR", "")]);
    assert!(has_escape(&empty), "{:?}", text(&empty));
    let never = on_a_terminal("--color never profile no-such-profile", &[]);
    assert!(!has_escape(&never), "{:?}", text(&never));
}

#[test]
fn exit_statuses_match_the_docs_without_an_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = invalid_spec(dir.path());
    // An invalid spec, flag or profile: 2.
    assert_eq!(run(&mut cordon(&["run", &spec])).status.code(), Some(2));
    assert_eq!(
        run(&mut cordon(&["run", "--no-such-flag"])).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&mut cordon(&["profile", "nope"])).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&mut cordon(&["profile", "strict"])).status.code(),
        Some(0)
    );
    let repo = dir.path().join("not-a-repo");
    assert_eq!(
        run(&mut cordon(&["testgen", repo.to_str().expect("utf-8")]))
            .status
            .code(),
        Some(2)
    );
    // A token the service would never see: refused before any request, as invalid input.
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "").expect("writes");
    let out = run(&mut cordon(&[
        "jobs",
        "--server",
        "http://127.0.0.1:9",
        "--token-file",
        empty.to_str().expect("utf-8"),
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// A one-request HTTP service on 127.0.0.1 that answers `status` with a JSON error.
fn refusing_service(status: &'static str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        if let Some(Ok(mut conn)) = listener.incoming().next() {
            let mut reader = BufReader::new(conn.try_clone().expect("clones"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = r#"{"error":{"kind":"unauthorized","message":"the token is not one of the service's"}}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_refused_token_is_invalid_input_and_a_failing_service_a_sandbox_error() {
    let server = refusing_service("401 Unauthorized");
    let out = run(&mut cordon(&[
        "jobs", "--server", &server, "--token", "wrong",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));

    let server = refusing_service("500 Internal Server Error");
    let out = run(&mut cordon(&["jobs", "--server", &server, "--token", "t"]));
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}
