//! Shared helpers for the integration tests: they drive the real `cordon` binary against the
//! real Docker engine (no mock anywhere) and check what it leaves behind.
//!
//! Each test builds its spec and workspace in its own temporary directory, runs
//! `cordon run SPEC --json --out DIR` with that directory as the working directory, parses the
//! single JSON object on stdout, and checks by job id (the `org.cordon.job` label) that no
//! container or volume is left.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

/// The image every test job runs in.
pub const IMAGE: &str = "cordon/python:3.11";

/// How long any single cordon run may take before the test gives up on it (and kills it).
pub const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// How much of cordon's stderr a test keeps (the rest is read and dropped).
const STDERR_KEEP: usize = 4 << 20;

pub fn cordon_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cordon")
}

/// Runs `docker ARGS` and returns its stdout; panics (with stderr) if it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics with a useful message unless the engine is up and the default image is present.
pub fn require_image() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = CHECKED.get_or_init(|| {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match info {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "the Docker engine is not reachable (`docker info` failed: {}); these tests need a real engine",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Err(e) => return Err(format!("cannot run `docker`: {e}")),
        }
        let img = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
            .output();
        match img {
            Ok(o) if o.status.success() => Ok(()),
            _ => Err(format!(
                "image {IMAGE} is not present: run `cordon image build python` (or `cargo run -- image build python`) first; the CI script builds it"
            )),
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// Names of containers (any state) carrying `label`.
pub fn containers_with_label(label: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Names}} {{.Status}}",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(str::to_string)
    .collect()
}

/// Names of volumes carrying `label`.
pub fn volumes_with_label(label: &str) -> Vec<String> {
    docker(&["volume", "ls", "-q", "--filter", &format!("label={label}")])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Force-removes every container and volume carrying `label` (cleanup after a failed test).
pub fn remove_labelled(label: &str) {
    let ids = docker(&["ps", "-aq", "--filter", &format!("label={label}")]);
    for id in ids.split_whitespace() {
        let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
    }
    for v in volumes_with_label(label) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &v])
            .output();
    }
}

/// Panics if any container or volume of `job_id` remains.
pub fn assert_no_leftovers(job_id: &str) {
    assert!(
        job_id.starts_with("job-"),
        "not a cordon job id: {job_id:?}"
    );
    let label = format!("org.cordon.job={job_id}");
    let c = containers_with_label(&label);
    let v = volumes_with_label(&label);
    assert!(
        c.is_empty() && v.is_empty(),
        "job {job_id} left things behind: containers {c:?}, volumes {v:?}"
    );
}

/// The `org.cordon.owner` label value cordon writes for its process `pid` on this host.
pub fn owner_label(pid: u32) -> String {
    let host = nix::unistd::gethostname()
        .expect("hostname")
        .to_string_lossy()
        .into_owned();
    format!("{host}:{pid}")
}

fn unix_secs(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).expect("clock");
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Engine events (`type action name`) for anything labelled as created by cordon process
/// `pid`, between `since` and `until`. Container events carry their labels, so this finds
/// every container that process created, even one already removed.
pub fn events_of_owner(pid: u32, since: SystemTime, until: SystemTime) -> Vec<String> {
    docker(&[
        "events",
        "--since",
        &unix_secs(since),
        "--until",
        &unix_secs(until),
        "--filter",
        &format!("label=org.cordon.owner={}", owner_label(pid)),
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.ID}}",
    ])
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(str::to_string)
    .collect()
}

/// The OCI runtime a test job's steps run under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// The engine's default: the spec as written (`strict` unless it names a profile).
    Runc,
    /// gVisor: the built-in `gvisor` profile (strict under runsc), see [`Job::new_under`].
    Runsc,
}

/// Panics with the fix unless the engine has runsc registered as cordon needs it.
pub fn require_runsc() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = CHECKED.get_or_init(|| {
        let runtimes = docker(&["info", "--format", "{{json .Runtimes}}"]);
        let v: Value = serde_json::from_str(runtimes.trim()).unwrap_or(Value::Null);
        let args: Vec<&str> = v["runsc"]["runtimeArgs"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if v["runsc"].is_object() && args.contains(&"--oci-seccomp") {
            Ok(())
        } else {
            Err(format!(
                "the engine has no runsc registered with --oci-seccomp (it has {}): these tests run jobs under gVisor; `.ci/run` installs and registers it (apt-get install runsc; daemon.json; kill -HUP dockerd)",
                runtimes.trim()
            ))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

/// `spec` as it runs under `runtime`: under runsc, the `gvisor` profile where the spec names
/// none (or `strict`). A spec naming a profile of its own keeps it; the job's profile files
/// inherit `gvisor` instead of `strict` (see [`Job::write`]).
pub fn spec_under(runtime: Runtime, spec: &str) -> String {
    if runtime == Runtime::Runc {
        return spec.to_string();
    }
    let mut named = false;
    let mut out: Vec<String> = spec
        .lines()
        .map(|l| {
            if let Some(p) = l.strip_prefix("profile:") {
                named = true;
                if p.trim() == "strict" {
                    return "profile: gvisor".to_string();
                }
            }
            l.to_string()
        })
        .collect();
    if !named {
        out.insert(0, "profile: gvisor".to_string());
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// A job under construction: a temp dir holding `job.yaml`, a workspace `repo/`, and the
/// artifact dir `out/` (created by cordon).
pub struct Job {
    pub dir: TempDir,
    pub runtime: Runtime,
}

impl Job {
    /// A job whose spec is `spec` (YAML), with an empty workspace directory `repo/`.
    pub fn new(spec: &str) -> Job {
        Job::new_under(Runtime::Runc, spec)
    }

    /// The job of `spec` with its steps under `runtime` ([`spec_under`]).
    pub fn new_under(runtime: Runtime, spec: &str) -> Job {
        require_image();
        if runtime == Runtime::Runsc {
            require_runsc();
        }
        let dir = tempfile::Builder::new()
            .prefix("cordon-it-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir repo");
        std::fs::write(dir.path().join("job.yaml"), spec_under(runtime, spec)).expect("write spec");
        Job { dir, runtime }
    }

    /// Adds a file (parents created) under the job's directory, e.g. `repo/test_x.py`.
    pub fn file(self, rel: &str, content: &str) -> Job {
        self.write(rel, content);
        self
    }

    /// Writes a file under the job's directory; under runsc, a profile of the job's
    /// (`sandbox-profiles/…`) that `inherits: strict` inherits `gvisor` instead.
    pub fn write(&self, rel: &str, content: &str) {
        let content = if self.runtime == Runtime::Runsc && rel.starts_with("sandbox-profiles/") {
            content.replace("inherits: strict", "inherits: gvisor")
        } else {
            content.to_string()
        };
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, content).expect("write file");
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn spec(&self) -> PathBuf {
        self.path("job.yaml")
    }

    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// `cordon run job.yaml --json --out out`, in the job's directory, with piped output.
    pub fn command(&self) -> Command {
        let mut c = Command::new(cordon_bin());
        c.arg("run")
            .arg(self.spec())
            // Every line of a prepare's output, not the progress line a pipe gets without -v:
            // tests read what the prepare printed.
            .arg("-v")
            .arg("--json")
            .arg("--out")
            .arg(self.out())
            .current_dir(self.dir.path())
            // The tests' own environment must not leak into (or change) what a job sees.
            .env_remove("CORDON_TEST_SECRET")
            .env_remove("CORDON_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs the job and waits for cordon to exit.
    pub fn run(&self) -> Finished {
        let r = Running::spawn(self.command()).wait();
        self.check_profile(&r);
        r
    }

    /// Under runsc, a job that ran did so under `gvisor` or a profile the test wrote (which
    /// inherits it), never under `strict`.
    pub fn check_profile(&self, r: &Finished) {
        if self.runtime != Runtime::Runsc {
            return;
        }
        let profile = serde_json::from_str::<Value>(r.stdout.trim())
            .ok()
            .and_then(|v| v["profile"].as_str().map(str::to_string));
        if let Some(p) = profile {
            assert_ne!(
                p,
                "strict",
                "a gVisor test ran under strict\n{}",
                r.context()
            );
        }
    }
}

/// A cordon process being watched: output drained in threads, peak RSS sampled.
pub struct Running {
    pub child: Child,
    pub started: Instant,
    pub started_at: SystemTime,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<u64>>,
    /// The first few MiB of stderr read so far.
    stderr_kept: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let started_at = SystemTime::now();
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn cordon");
        let mut so = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = so.read_to_end(&mut buf);
            buf
        });
        let mut se = child.stderr.take().expect("piped stderr");
        let stderr_kept = Arc::new(Mutex::new(Vec::new()));
        let kept = stderr_kept.clone();
        let stderr = std::thread::spawn(move || {
            let mut total = 0u64;
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                match se.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n as u64;
                        let mut kept = kept.lock().expect("lock");
                        let room = STDERR_KEEP.saturating_sub(kept.len()).min(n);
                        kept.extend_from_slice(&chunk[..room]);
                    }
                }
            }
            total
        });
        Running {
            child,
            started,
            started_at,
            stdout: Some(stdout),
            stderr: Some(stderr),
            stderr_kept,
        }
    }

    /// Stderr so far (lossy UTF-8).
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr_kept.lock().expect("lock")).into_owned()
    }

    /// Waits until cordon's stderr (with `--json`, the job's output) contains `needle`.
    /// Panics after `timeout` or if cordon exits first.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            if self.stderr_so_far().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "cordon exited ({status:?}) before printing {needle:?}; stderr:\n{}",
                    self.stderr_so_far()
                );
            }
            assert!(
                Instant::now() < until,
                "{needle:?} not printed within {timeout:?}; stderr:\n{}",
                self.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the cordon process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)
            .expect("kill(2)");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for exit (killing cordon after [`RUN_DEADLINE`]), sampling its peak RSS.
    pub fn wait(self) -> Finished {
        self.wait_at_most(RUN_DEADLINE)
    }

    /// Waits for exit, killing cordon (and failing) after `deadline`.
    pub fn wait_at_most(mut self, deadline: Duration) -> Finished {
        let pid = self.pid();
        let mut peak_rss_kib = 0u64;
        let mut hung = false;
        let status = loop {
            if let Some(hwm) = vm_hwm_kib(pid) {
                peak_rss_kib = peak_rss_kib.max(hwm);
            }
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if self.started.elapsed() > deadline {
                hung = true;
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        let ended_at = SystemTime::now();
        let stdout = self
            .stdout
            .take()
            .expect("stdout thread")
            .join()
            .expect("stdout reader");
        let stderr_bytes = self
            .stderr
            .take()
            .expect("stderr thread")
            .join()
            .expect("stderr reader");
        let stderr = std::mem::take(&mut *self.stderr_kept.lock().expect("lock"));
        let f = Finished {
            pid,
            status,
            elapsed,
            started_at: self.started_at,
            ended_at,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            stderr_bytes,
            peak_rss_kib,
        };
        if hung {
            // Do not leave the killed cordon's sandbox running on the engine.
            let owner = format!("org.cordon.owner={}", owner_label(pid));
            remove_labelled(&owner);
            panic!(
                "cordon did not exit within {deadline:?}; killed it (and removed its containers).\n{}",
                f.context()
            );
        }
        f
    }
}

/// `VmHWM` (peak resident set) of a live process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A finished cordon process.
pub struct Finished {
    pub pid: u32,
    pub status: ExitStatus,
    pub elapsed: Duration,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
    pub stdout: String,
    /// The first few MiB of stderr (lossy UTF-8): with `--json`, the job's output goes here.
    pub stderr: String,
    pub stderr_bytes: u64,
    pub peak_rss_kib: u64,
}

impl Finished {
    /// Exit status, stdout and the tail of stderr, for assertion messages.
    pub fn context(&self) -> String {
        let tail: String = {
            let s = &self.stderr;
            let start = s.len().saturating_sub(4000);
            let start = (start..s.len())
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(s.len());
            s[start..].to_string()
        };
        format!(
            "cordon exited with {:?} after {:?}\n--- stdout ---\n{}\n--- stderr (tail) ---\n{}",
            self.status, self.elapsed, self.stdout, tail
        )
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn assert_exit(&self, want: i32) {
        assert_eq!(
            self.code(),
            Some(want),
            "wrong exit status (want {want})\n{}",
            self.context()
        );
    }

    /// The single JSON object on stdout.
    pub fn json(&self) -> Value {
        let lines: Vec<&str> = self
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "--json must print exactly one line (one JSON object) on stdout\n{}",
            self.context()
        );
        let v: Value = serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.context()));
        assert!(
            v.is_object(),
            "stdout is not a JSON object\n{}",
            self.context()
        );
        v
    }

    /// The result object (panics on an `{"error": …}` object).
    pub fn result(&self) -> Value {
        let v = self.json();
        assert!(
            v.get("job_id").and_then(Value::as_str).is_some(),
            "the JSON has no job_id (not a result)\n{}",
            self.context()
        );
        v
    }

    pub fn job_id(&self) -> String {
        self.result()["job_id"]
            .as_str()
            .expect("job_id")
            .to_string()
    }

    pub fn outcome(&self) -> String {
        self.result()["outcome"]
            .as_str()
            .unwrap_or_else(|| panic!("no outcome\n{}", self.context()))
            .to_string()
    }

    pub fn assert_outcome(&self, want: &str) {
        assert_eq!(self.outcome(), want, "wrong outcome\n{}", self.context());
    }

    /// Outcome, exit status, and no leftovers: the checks every job run ends with.
    pub fn assert_ended(&self, outcome: &str, exit: i32) {
        self.assert_outcome(outcome);
        self.assert_exit(exit);
        self.assert_no_leftovers();
    }

    pub fn assert_no_leftovers(&self) {
        assert_no_leftovers(&self.job_id());
    }

    /// The step results.
    pub fn steps(&self) -> Vec<Value> {
        self.result()["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The job's output as cordon relayed it (with `--json`, on stderr).
    pub fn output(&self) -> &str {
        &self.stderr
    }

    /// Lines `KEY=VALUE` the job printed (e.g. `CHECK caps=ok`), as a lookup.
    pub fn printed(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    /// Asserts that no container was ever created by this cordon process (by its owner label),
    /// so invalid input really "started nothing".
    pub fn assert_created_nothing(&self) {
        let ev = events_of_owner(self.pid, self.started_at, self.ended_at);
        assert!(
            ev.is_empty(),
            "cordon created engine objects although the input was invalid: {ev:?}\n{}",
            self.context()
        );
    }
}

/// Every file and directory under `root`, relative, sorted, with a type tag (`f`, `d`, `l`).
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let ft = e.file_type().expect("file type");
            if ft.is_symlink() {
                out.push(format!("l {rel}"));
            } else if ft.is_dir() {
                out.push(format!("d {rel}"));
                walk(root, &p, out);
            } else {
                out.push(format!("f {rel}"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `tree` plus each regular file's content and mode, to prove a directory was not written.
pub fn snapshot(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    tree(root)
        .into_iter()
        .map(|entry| {
            let rel = &entry[2..];
            let p = root.join(rel);
            let m = std::fs::symlink_metadata(&p).expect("metadata");
            let content = if m.is_file() {
                String::from_utf8_lossy(&std::fs::read(&p).expect("read")).into_owned()
            } else if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            format!(
                "{entry} mode={:o} mtime={}.{} {content:?}",
                m.mode(),
                m.mtime(),
                m.mtime_nsec()
            )
        })
        .collect()
}
