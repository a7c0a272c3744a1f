//! What a job can and cannot touch under the default `strict` profile, checked from inside a
//! real container: network, identity and privileges, filesystem, host environment, and the
//! host's copy of the workspace.
//!
//! The probes print `CHECK <name>=ok` (or `=FAIL <detail>`) and exit non-zero on any failure,
//! so a test both names the broken invariant and sees a failed job.

mod common;

use common::{Finished, Job, Runtime, snapshot};

/// Asserts each named check printed `ok`.
fn assert_checks(r: &Finished, names: &[&str]) {
    let mut bad = Vec::new();
    for n in names {
        match r.printed(&format!("CHECK {n}")) {
            Some(v) if v == "ok" => {}
            Some(v) => bad.push(format!("{n}: {v}")),
            None => bad.push(format!("{n}: not reported")),
        }
    }
    assert!(bad.is_empty(), "failed checks: {bad:#?}\n{}", r.context());
}

const PROBE_SPEC: &str = r#"
workspace: { source: ./repo }
steps:
  - { name: probe, run: "python3 probe.py", timeout: 60s }
limits: { memory: 128MiB, pids: 32, scratch: 16MiB }
"#;

const NET_PROBE: &str = r#"
import socket, sys, errno

fails = 0
def check(name, ok, detail=""):
    global fails
    print(f"CHECK {name}=" + ("ok" if ok else f"FAIL {detail}"), flush=True)
    fails += 0 if ok else 1

names = [n for _, n in socket.if_nameindex()]
check("interfaces", names == ["lo"], names)

with open("/proc/net/dev") as f:
    devs = [l.split(":")[0].strip() for l in f.readlines()[2:]]
check("proc_net_dev", devs == ["lo"], devs)

try:
    r = socket.getaddrinfo("pypi.org", 443)
    check("dns", False, f"pypi.org resolved to {r[:1]}")
except OSError as e:
    check("dns", True)

try:
    r = socket.getaddrinfo("localhost", 80)
    check("localhost_lookup", True)
except OSError as e:
    # Not required, just informative.
    print("no localhost lookup:", e)

with open("/proc/net/route") as f:
    routes = f.readlines()[1:]
check("no_ipv4_route", routes == [], routes)

def cannot_connect(name, family, addr):
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        check(name, True)
        return
    s.settimeout(3)
    try:
        s.connect(addr)
        check(name, False, f"connected to {addr}")
    except OSError as e:
        check(name, True)
    finally:
        s.close()

cannot_connect("no_route_v4", socket.AF_INET, ("1.1.1.1", 80))
cannot_connect("no_route_v4_private", socket.AF_INET, ("172.17.0.1", 2375))
cannot_connect("no_route_v6", socket.AF_INET6, ("2606:4700:4700::1111", 80))

# Loopback itself works (tests may run a local server).
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
c = socket.create_connection(srv.getsockname(), timeout=3)
check("loopback_works", True)
c.close(); srv.close()

sys.exit(1 if fails else 0)
"#;

#[test]
fn network_is_loopback_only_without_dns_or_route() {
    network_probe(Runtime::Runc);
}

#[test]
fn network_is_loopback_only_without_dns_or_route_under_gvisor() {
    network_probe(Runtime::Runsc);
}

fn network_probe(rt: Runtime) {
    let job = Job::new_under(rt, PROBE_SPEC).file("repo/probe.py", NET_PROBE);
    let r = job.run();
    assert_checks(
        &r,
        &[
            "interfaces",
            "proc_net_dev",
            "dns",
            "no_ipv4_route",
            "no_route_v4",
            "no_route_v4_private",
            "no_route_v6",
            "loopback_works",
        ],
    );
    r.assert_ended("passed", 0);
}

const PRIV_PROBE: &str = r#"
import os, sys, resource, ctypes, errno

fails = 0
def check(name, ok, detail=""):
    global fails
    print(f"CHECK {name}=" + ("ok" if ok else f"FAIL {detail}"), flush=True)
    fails += 0 if ok else 1

status = {}
with open("/proc/self/status") as f:
    for line in f:
        k, _, v = line.partition(":")
        status[k] = v.strip()
print("STATUS", {k: status.get(k) for k in ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}, flush=True)

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
    check(cap, int(status.get(cap, "1"), 16) == 0, status.get(cap))
# gVisor's /proc/self/status has no CapAmb or NoNewPrivs line: ask the kernel (the host's, or
# gVisor's) the same through prctl.
if "CapAmb" in status:
    check("CapAmb", int(status["CapAmb"], 16) == 0, status["CapAmb"])
else:
    PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET = 47, 1
    amb = [c for c in range(41) if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1]
    check("CapAmb", amb == [], amb)
PR_GET_NO_NEW_PRIVS = 39
nnp = libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
check("no_new_privs", status.get("NoNewPrivs", "1") == "1" and nnp == 1, (status.get("NoNewPrivs"), nnp))
check("seccomp_filter", status.get("Seccomp") == "2", status.get("Seccomp"))

check("uid", os.getuid() == 1000 and os.geteuid() == 1000, (os.getuid(), os.geteuid()))
check("gid", os.getgid() == 1000 and os.getegid() == 1000, (os.getgid(), os.getegid()))
check("not_root_groups", 0 not in os.getgroups(), os.getgroups())

def cannot_write(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        return False
    except OSError:
        return True

check("readonly_usr", cannot_write("/usr/x"), "wrote /usr/x")
check("readonly_etc", cannot_write("/etc/x"), "wrote /etc/x")
check("readonly_root", cannot_write("/x"), "wrote /x")
check("etc_passwd", cannot_write("/etc/passwd"), "wrote /etc/passwd")

def can_write(path):
    try:
        with open(path, "w") as f:
            f.write("hello")
        with open(path) as f:
            return f.read() == "hello"
    except OSError as e:
        print("cannot write", path, e)
        return False

check("writable_tmp", can_write("/tmp/x"))
check("writable_out", can_write("/out/x"))
check("writable_workspace", can_write("/workspace/x"))
check("cwd_is_workspace", os.getcwd() == "/workspace", os.getcwd())

mounts = open("/proc/self/mounts").read()
print(mounts, flush=True)
root = [l for l in mounts.splitlines() if l.split()[1] == "/"]
check("root_mounted_ro", bool(root) and "ro" in root[0].split()[3].split(","), root)

check("no_docker_socket", not os.path.exists("/var/run/docker.sock") and not os.path.exists("/run/docker.sock"))

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
check("nofile", hard <= 1024 and soft <= 1024, (soft, hard))

# Privileged syscalls the seccomp profile (and missing capabilities) refuse.
CLONE_NEWUSER = 0x10000000
check("unshare_user_ns", libc.unshare(CLONE_NEWUSER) != 0, "unshare(CLONE_NEWUSER) succeeded")
check("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None) != 0, "mount succeeded")
PTRACE_TRACEME = 0
check("ptrace", libc.ptrace(PTRACE_TRACEME, 0, None, None) != 0, "ptrace succeeded")

# setuid binaries do not grant root (no-new-privileges, no caps).
import subprocess
for su in ("/usr/bin/su", "/bin/su", "/usr/bin/sudo"):
    if os.path.exists(su):
        r = subprocess.run([su, "-c", "id -u"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=10)
        check("setuid_" + os.path.basename(su), r.stdout.strip() != "0", r.stdout)

sys.exit(1 if fails else 0)
"#;

#[test]
fn no_capabilities_not_root_read_only_root_and_seccomp() {
    privilege_probe(Runtime::Runc);
}

#[test]
fn no_capabilities_not_root_read_only_root_and_seccomp_under_gvisor() {
    privilege_probe(Runtime::Runsc);
}

fn privilege_probe(rt: Runtime) {
    let job = Job::new_under(rt, PROBE_SPEC).file("repo/probe.py", PRIV_PROBE);
    let r = job.run();
    assert_checks(
        &r,
        &[
            "CapInh",
            "CapPrm",
            "CapEff",
            "CapBnd",
            "CapAmb",
            "no_new_privs",
            "seccomp_filter",
            "uid",
            "gid",
            "not_root_groups",
            "readonly_usr",
            "readonly_etc",
            "readonly_root",
            "etc_passwd",
            "writable_tmp",
            "writable_out",
            "writable_workspace",
            "cwd_is_workspace",
            "root_mounted_ro",
            "no_docker_socket",
            "nofile",
            "unshare_user_ns",
            "mount",
            "ptrace",
        ],
    );
    r.assert_ended("passed", 0);
}

#[test]
fn writable_scratch_is_size_capped() {
    scratch_cap(Runtime::Runc);
}

#[test]
fn writable_scratch_is_size_capped_under_gvisor() {
    scratch_cap(Runtime::Runsc);
}

fn scratch_cap(rt: Runtime) {
    // limits.scratch caps /tmp, /out and the workspace: writing past it fails (ENOSPC) instead
    // of filling the host's disk.
    let job = Job::new_under(
        rt,
        r#"
workspace: { source: ./repo }
steps:
  - name: fill
    run: |
      for d in /tmp /out /workspace; do
        if head -c 12M /dev/zero > $d/fill 2>/dev/null; then echo "CHECK cap_$d=FAIL wrote 12M"; else echo "CHECK cap_$d=ok"; fi
        rm -f $d/fill
      done
    timeout: 30s
artifacts: [/out/none]
limits: { memory: 128MiB, pids: 32, scratch: 8MiB }
"#,
    );
    let r = job.run();
    assert_checks(&r, &["cap_/tmp", "cap_/out", "cap_/workspace"]);
    r.assert_no_leftovers();
}

fn secret_value() -> String {
    format!("hunter2-{}", std::process::id())
}

#[test]
fn host_secret_in_cordons_environment_is_not_visible_in_the_container() {
    let secret = secret_value();
    let job = Job::new(
        r#"
steps:
  - name: snoop
    run: |
      echo "HOME-IS=$HOME"
      env
      echo ---
      for f in /proc/[0-9]*/environ; do tr '\0' '\n' < "$f" 2>/dev/null; done
      echo ---
      cat /proc/1/cmdline | tr '\0' ' '
      echo
      echo snoop-done
    timeout: 30s
limits: { memory: 64MiB, pids: 32 }
"#,
    );
    let mut cmd = job.command();
    cmd.env("CORDON_TEST_SECRET", &secret)
        .env("OPENAI_API_KEY", &secret)
        .env("GITHUB_TOKEN", &secret);
    let r = common::Running::spawn(cmd).wait();
    r.assert_ended("passed", 0);
    assert!(
        r.output().contains("snoop-done") && r.output().contains("HOME-IS=/tmp"),
        "the probe did not run\n{}",
        r.context()
    );
    assert!(
        !r.output().contains(&secret) && !r.stdout.contains(&secret),
        "a host secret reached the container\n{}",
        r.context()
    );
    // Nothing of the test harness's own environment either.
    for var in [
        "CARGO_MANIFEST_DIR=",
        "NEXTEST",
        "RUST_",
        "CORDON_TEST_SECRET",
    ] {
        assert!(
            !r.output().contains(var),
            "host variable {var}… visible in the container\n{}",
            r.context()
        );
    }
}

#[test]
fn a_host_variable_named_in_pass_env_is_visible() {
    let secret = secret_value();
    let job = Job::new(
        r#"
steps:
  - { name: show, run: 'echo "SEEN=$CORDON_TEST_SECRET"; echo "OTHER=${GITHUB_TOKEN:-unset}"', timeout: 30s }
pass_env: [CORDON_TEST_SECRET]
limits: { memory: 64MiB, pids: 16 }
"#,
    );
    let mut cmd = job.command();
    cmd.env("CORDON_TEST_SECRET", &secret)
        .env("GITHUB_TOKEN", "not-passed");
    let r = common::Running::spawn(cmd).wait();
    r.assert_ended("passed", 0);
    assert_eq!(r.printed("SEEN"), Some(secret), "{}", r.context());
    assert_eq!(
        r.printed("OTHER").as_deref(),
        Some("unset"),
        "{}",
        r.context()
    );
}

fn hostile_workspace(job: &Job) {
    job.write("repo/keep.txt", "original\n");
    job.write("repo/sub/deep.txt", "deep original\n");
    job.write("repo/test_x.py", "def test_x():\n    assert True\n");
}

#[test]
fn copy_mode_never_writes_the_host_copy() {
    copy_mode_vandal(Runtime::Runc);
}

#[test]
fn copy_mode_never_writes_the_host_copy_under_gvisor() {
    copy_mode_vandal(Runtime::Runsc);
}

fn copy_mode_vandal(rt: Runtime) {
    let job = Job::new_under(
        rt,
        r#"
workspace: { source: ./repo, mode: copy }
steps:
  - name: vandal
    run: |
      set -e
      echo changed > keep.txt
      test "$(cat keep.txt)" = changed
      echo new > /workspace/new.txt
      chmod 000 sub/deep.txt
      rm -rf sub
      ln -s /etc/passwd link
      mkdir -p made/dir
      echo vandal-done
    timeout: 30s
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    );
    hostile_workspace(&job);
    let before = snapshot(&job.path("repo"));
    let r = job.run();
    r.assert_ended("passed", 0);
    assert!(r.output().contains("vandal-done"), "{}", r.context());
    assert_eq!(
        snapshot(&job.path("repo")),
        before,
        "the job changed the host's workspace"
    );
}

#[test]
fn bind_mode_workspace_is_read_only_and_the_host_copy_is_untouched() {
    let job = Job::new(
        r#"
workspace: { source: ./repo, mode: bind }
steps:
  - name: vandal
    run: |
      fails=0
      for what in "echo x > keep.txt" "echo x > new.txt" "rm -f keep.txt" "rm -rf sub" "mkdir made" "chmod 777 keep.txt" "ln -s /etc/passwd link" "touch keep.txt"; do
        if sh -c "$what" 2>/dev/null; then echo "CHECK ro=FAIL $what"; fails=1; fi
      done
      [ $fails = 0 ] && echo "CHECK ro=ok"
      test "$(cat keep.txt)" = original && echo "CHECK readable=ok"
      python3 -m pytest -q -p no:cacheprovider test_x.py && echo "CHECK pytest=ok"
      exit $fails
    timeout: 60s
limits: { memory: 128MiB, pids: 32, scratch: 16MiB }
"#,
    );
    hostile_workspace(&job);
    let before = snapshot(&job.path("repo"));
    let r = job.run();
    assert_checks(&r, &["ro", "readable", "pytest"]);
    r.assert_ended("passed", 0);
    assert_eq!(
        snapshot(&job.path("repo")),
        before,
        "the job changed the host's workspace"
    );
}

#[test]
fn symlinks_in_the_host_workspace_do_not_expose_host_files() {
    // A repository (untrusted too) with absolute links pointing out of itself: the copy
    // stores the links, never what they point to on the host.
    let job = Job::new(
        r#"
workspace: { source: ./repo, mode: copy }
steps:
  - name: peek
    run: |
      cat abs-link dir-link/secret.txt 2>&1 || true
      ls -la . dir-link/ 2>&1 || true
      echo peek-done
    timeout: 30s
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    );
    let host_secret = format!("host-only-{}", std::process::id());
    job.write("secret.txt", &host_secret);
    std::os::unix::fs::symlink(job.path("secret.txt"), job.path("repo/abs-link")).expect("symlink");
    std::os::unix::fs::symlink(job.dir.path(), job.path("repo/dir-link")).expect("symlink");
    let r = job.run();
    r.assert_ended("passed", 0);
    assert!(r.output().contains("peek-done"), "{}", r.context());
    assert!(
        !r.output().contains(&host_secret),
        "a host file outside the workspace was copied in through a symlink\n{}",
        r.context()
    );
}

#[test]
fn a_relative_symlink_leaving_the_workspace_is_not_a_sandbox_error() {
    // `repo/up -> ../secret.txt` is ordinary in real repositories' history (and hostile in
    // an untrusted one). The engine refuses to unpack a link that leaves the upload
    // directory, so cordon must either leave such links out (and run the job) or refuse the
    // workspace as invalid input (exit 2, naming the link, nothing created). Either way the
    // host file must not reach the container; a raw engine 500 reported as cordon's own
    // `sandbox_error` is neither.
    let job = Job::new(
        r#"
workspace: { source: ./repo, mode: copy }
steps:
  - name: peek
    run: |
      cat up 2>&1 || true
      echo peek-done
    timeout: 30s
limits: { memory: 64MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("repo/keep.txt", "kept\n");
    let host_secret = format!("host-only-{}", std::process::id());
    job.write("secret.txt", &host_secret);
    std::os::unix::fs::symlink("../secret.txt", job.path("repo/up")).expect("symlink");
    let r = job.run();
    assert!(
        !r.output().contains(&host_secret),
        "a host file outside the workspace reached the container\n{}",
        r.context()
    );
    if r.code() == Some(2) {
        let msg = format!("{}{}", r.stdout, r.stderr);
        assert!(
            msg.contains("up"),
            "the error does not name the link\n{}",
            r.context()
        );
        r.assert_created_nothing();
    } else {
        r.assert_ended("passed", 0);
        assert!(r.output().contains("peek-done"), "{}", r.context());
    }
}

#[test]
fn the_network_probe_does_see_a_network_when_egress_is_allowed() {
    // Proves the probe above can fail: under a profile that allows egress, a step with
    // `network: egress` has an interface besides loopback and a route.
    let job = Job::new(
        r#"
profile: egress
workspace: { source: ./repo }
steps:
  - { name: probe, run: "python3 probe.py", network: egress, timeout: 60s }
limits: { memory: 128MiB, pids: 32, scratch: 16MiB }
"#,
    )
    .file("repo/probe.py", NET_PROBE)
    .file(
        "sandbox-profiles/egress.yaml",
        "inherits: strict\nallow_egress: true\n",
    );
    let r = job.run();
    r.assert_ended("failed", 1);
    let iface = r.printed("CHECK interfaces").unwrap_or_default();
    assert!(iface.starts_with("FAIL"), "{}", r.context());
    let route = r.printed("CHECK no_ipv4_route").unwrap_or_default();
    assert!(route.starts_with("FAIL"), "{}", r.context());
}

const LIMITS_PROBE: &str = r#"
import os, resource, sys

fails = 0
def check(name, ok, detail=""):
    global fails
    print(f"CHECK {name}=" + ("ok" if ok else f"FAIL {detail}"), flush=True)
    fails += 0 if ok else 1

def read(*paths):
    for p in paths:
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            pass
    return None

v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
mem = read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
check("memory", mem == str(96 << 20), mem)
if v2:
    swap = read("/sys/fs/cgroup/memory.swap.max")
    check("no_swap", swap == "0", swap)
else:
    memsw = read("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
    check("no_swap", memsw == str(96 << 20), memsw)
pids = read("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max")
check("pids", pids == "40", pids)
if v2:
    cpu = read("/sys/fs/cgroup/cpu.max")
    q, p = cpu.split()
else:
    q, p = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
check("cpu_quota", int(q) * 2 == int(p), (q, p))
check("nofile", resource.getrlimit(resource.RLIMIT_NOFILE) == (256, 256), resource.getrlimit(resource.RLIMIT_NOFILE))
st = os.statvfs("/tmp")
check("tmp_size", st.f_blocks * st.f_frsize == 8 << 20, st.f_blocks * st.f_frsize)
sys.exit(1 if fails else 0)
"#;

#[test]
fn the_kernel_enforces_the_limits_asked_for() {
    let job = Job::new(
        r#"
workspace: { source: ./repo }
steps:
  - { name: probe, run: "python3 probe.py", timeout: 60s }
limits: { memory: 96MiB, pids: 40, cpus: 0.5, nofile: 256, scratch: 8MiB }
"#,
    )
    .file("repo/probe.py", LIMITS_PROBE);
    let r = job.run();
    assert_checks(
        &r,
        &[
            "memory",
            "no_swap",
            "pids",
            "cpu_quota",
            "nofile",
            "tmp_size",
        ],
    );
    r.assert_ended("passed", 0);
}
