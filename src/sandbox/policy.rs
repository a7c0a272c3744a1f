//! Profile + limits → what the engine makes, in exactly one place, in no engine's terms.
//!
//! [`job_plan`] is the whole attack surface of a job — its scratch volumes, its `prepare`'s
//! network and sandbox, each step's sandbox — as one [`JobPlan`]: read it (or its snapshot
//! test) to see what a job can touch. An engine only carries a plan out and reads back what
//! it made (Docker: `docker::config`, whose `verify` refuses a sandbox where any setting did
//! not stick). The gate, the program every sandbox runs, and what it is told are here too.

use std::collections::BTreeMap;

use super::labels;
use super::plan::{
    JobPlan, Limits, Mount, NetworkAccess, NetworkPlan, PreparePlan, SandboxPlan, Security, Tmpfs,
    User, VolumePlan,
};
use super::{Scratch, StepCommand};
use crate::spec::{Job, Network, OUT_DIR, WorkspaceMode};

/// The step's command runs under this small POSIX shell program, the container's main
/// process (under the engine's init). Everything it is told comes over stdin, so a container
/// can be made before its job is known (the warm pool); [`gate_input`] and [`load_frame`]
/// write it. In order:
///
/// 1. It says hello on stdout: `cordon-gate`, then ` load` if it can take the workspace over
///    stdin (`dd` with `iflag=fullblock`, and GNU `tar`), ` send` if it can send artifacts
///    back (GNU `tar`). Images without them get the engine's archive API instead.
/// 2. Any number of `load` requests: a tar of the workspace in frames (a line with a count of
///    512-byte blocks, then exactly those blocks; `0` ends it), extracted into the working
///    directory; it answers `cordon-loaded <tar's exit code>` on stdout.
/// 3. Only from the warm pool, before any `load`: `warm`, then a block of paths (relative to
///    `/`, see [`warm_request`]). It reads every file under them once, as the sandbox user,
///    writing nothing, so the job's first reads find warm caches on storage drivers that
///    keep them per container (fuse-overlayfs); it answers `cordon-warmed`.
/// 4. `run`, then the nonce, the mode (`go`, `hold` or `send`), the environment, the command
///    and the artifact paths (see [`gate_input`]). It runs the command with stdin closed and
///    the job's variables set in a subshell of its own, so none of them can change the gate's.
///
/// In `go` mode it exits with the command's exit code, so the engine reports that code. In
/// `hold` and `send` modes it then kills every process the command left behind and prints
/// cordon's nonce on stdout and on stderr (so cordon knows both streams are complete). `hold`
/// then waits: the container stays up, with its tmpfs scratch, while cordon freezes it and
/// copies artifacts out, until cordon closes stdin. `send` instead writes a tar of the
/// artifact paths that exist (relative to `/`; hard links stored as the files they are) to
/// stdout, with no job process left to change them, and exits with the command's code.
///
/// Before `run`, nothing of the job's runs, so the gate's stdout is its own. The nonce comes
/// over stdin, not argv or env. A job that forged it could only make its own artifacts be
/// collected early, or hand cordon a tar of its own making: what it could write to `/out`
/// anyway, and cordon extracts every artifact archive as hostile. The outcome still comes
/// from the engine's exit code and OOM flag.
pub const GATE: &str = r#"cordon_caps=
if tar --hard-dereference -cf /dev/null -C / --files-from /dev/null 2>/dev/null; then
  cordon_caps=' send'
  if dd if=/dev/null of=/dev/null bs=512 count=0 iflag=fullblock 2>/dev/null; then
    cordon_caps=' load send'
  fi
fi
printf 'cordon-gate%s\n' "$cordon_caps"
cordon_block() {
  IFS= read -r cordon_n || exit 125
  cordon_text=
  while [ "$cordon_n" -gt 0 ]; do
    IFS= read -r cordon_line || exit 125
    cordon_text="$cordon_text$cordon_line
"
    cordon_n=$((cordon_n - 1))
  done
}
while IFS= read -r cordon_verb || exit 125; do
  case $cordon_verb in
  load)
    while IFS= read -r cordon_n && [ "$cordon_n" -gt 0 ]; do
      dd ibs=512 obs=64k count="$cordon_n" iflag=fullblock 2>/dev/null || break
    done | { tar -xf -; cordon_t=$?; cat >/dev/null; exit "$cordon_t"; }
    printf 'cordon-loaded %s\n' "$?"
    ;;
  warm)
    cordon_block
    (
      set -f
      IFS='
'
      for cordon_p in $cordon_text; do
        find "/$cordon_p" -xdev -type f -exec cat -- {} + >/dev/null 2>&1
      done
    )
    printf 'cordon-warmed\n'
    ;;
  *) break ;;
  esac
done
[ "$cordon_verb" = run ] || exit 125
IFS= read -r cordon_nonce || exit 125
IFS= read -r cordon_mode || exit 125
cordon_block
cordon_env=$cordon_text
cordon_block
cordon_run=$cordon_text
cordon_block
cordon_paths=$cordon_text
unset cordon_text cordon_line cordon_n
(eval "$cordon_env" && exec sh -c -- "$cordon_run" cordon-step) </dev/null
cordon_code=$?
if [ "$cordon_mode" != go ]; then
  kill -9 -1 2>/dev/null
  while kill -0 -1 2>/dev/null; do :; done
  printf '%s\n' "$cordon_nonce"
  printf '%s\n' "$cordon_nonce" >&2
  if [ "$cordon_mode" = send ]; then
    set -f
    IFS='
'
    set --
    for cordon_p in $cordon_paths; do
      if [ -e "/$cordon_p" ] || [ -L "/$cordon_p" ]; then set -- "$@" "$cordon_p"; fi
    done
    if [ "$#" -eq 0 ]; then set -- --files-from /dev/null; fi
    tar --hard-dereference -cf - -C / "$@"
  else
    IFS= read -r cordon_ignored
  fi
fi
exit "$cordon_code""#;

/// How the gate ends after the step's command exits (see `policy::GATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// Exit at once with the command's code.
    Go,
    /// Kill leftovers, report done, and keep the container up until told to exit.
    Hold,
    /// Kill leftovers, report done, send the artifacts as a tar on stdout, and exit.
    Send,
}

impl GateMode {
    fn as_str(self) -> &'static str {
        match self {
            GateMode::Go => "go",
            GateMode::Hold => "hold",
            GateMode::Send => "send",
        }
    }
}

/// What the gate says first, on stdout.
pub const GATE_HELLO: &str = "cordon-gate";
/// How the gate answers a `load`, on stdout, followed by tar's exit code.
pub const GATE_LOADED: &str = "cordon-loaded ";

/// What the gate's hello says it can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateCaps {
    /// It takes the workspace over stdin.
    pub load: bool,
    /// It sends artifacts over stdout.
    pub send: bool,
}

impl GateCaps {
    /// Reads a hello line (without its newline); `None` if it is not one.
    pub fn parse(line: &str) -> Option<GateCaps> {
        let rest = line.strip_prefix(GATE_HELLO)?;
        let mut caps = GateCaps::default();
        for word in rest.split_whitespace() {
            match word {
                "load" => caps.load = true,
                "send" => caps.send = true,
                _ => {}
            }
        }
        (rest.is_empty() || rest.starts_with(' ')).then_some(caps)
    }
}

/// An artifact path the gate can be sent in [`GATE`]'s artifact block: one line, nothing a
/// shell pattern or `tar` option could make of it.
pub fn sendable_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && !path[1..].starts_with('-')
        && !path
            .chars()
            .any(|c| c.is_control() || matches!(c, '*' | '?' | '[' | '\\'))
}

/// How the gate answers a `warm`, on stdout.
pub const GATE_WARMED: &str = "cordon-warmed";

/// The image label that names the trees a warm sandbox reads before its job (see [`GATE`]):
/// absolute paths separated by `:`, such as a language's standard library and packages.
pub const WARM_LABEL: &str = "org.cordon.warm";

/// The paths of a [`WARM_LABEL`] value the gate can be given: absolute, and nothing
/// [`sendable_path`] refuses.
pub fn warm_paths(label: &str) -> Vec<String> {
    label
        .split(':')
        .map(str::trim)
        .filter(|p| sendable_path(p))
        .map(str::to_string)
        .collect()
}

/// The `warm` request for `paths` (absolute, as [`warm_paths`] gives them).
pub fn warm_request(paths: &[String]) -> Vec<u8> {
    let paths: Vec<&str> = paths
        .iter()
        .filter(|p| sendable_path(p))
        .map(|p| &p[1..])
        .collect();
    let mut req = format!("warm\n{}\n", paths.len());
    for p in paths {
        req.push_str(p);
        req.push('\n');
    }
    req.into_bytes()
}

/// The `load` request that precedes a workspace's frames.
pub const LOAD_REQUEST: &[u8] = b"load\n";
/// Ends a `load`'s frames.
pub const LOAD_END: &[u8] = b"0\n";

/// One frame of a `load`: `data` (a whole number of 512-byte blocks) with its header line.
pub fn load_frame(data: &[u8]) -> Vec<u8> {
    debug_assert!(data.len().is_multiple_of(512));
    let mut frame = format!("{}\n", data.len() / 512).into_bytes();
    frame.extend_from_slice(data);
    frame
}

/// What [`GATE`] reads on stdin at `run`: the nonce, the mode, then the environment (as
/// `export` lines the gate evaluates in a subshell of its own, so no variable of the job's
/// can change the gate's), the command, and the artifact paths to send (relative to `/`),
/// each block preceded by its line count. A variable whose name is not a shell identifier is
/// left out (`spec` refuses such names), and so is a path [`sendable_path`] refuses.
pub fn gate_input(
    nonce: &str,
    mode: GateMode,
    command: &StepCommand,
    artifacts: &[String],
) -> Vec<u8> {
    let mut env = String::new();
    for (k, v) in &command.env {
        if !crate::spec::is_variable_name(k) {
            continue;
        }
        env.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    let mut run = command.run.clone();
    if !run.ends_with('\n') {
        run.push('\n');
    }
    let mut paths = String::new();
    for p in artifacts.iter().filter(|p| sendable_path(p)) {
        paths.push_str(p.trim_start_matches('/'));
        paths.push('\n');
    }
    let lines = |t: &str| t.bytes().filter(|&b| b == b'\n').count();
    format!(
        "run\n{nonce}\n{}\n{}\n{env}{}\n{run}{}\n{paths}",
        mode.as_str(),
        lines(&env),
        lines(&run),
        lines(&paths)
    )
    .into_bytes()
}

/// The environment and command of `job.steps[step]`: the job's variables, then the step's,
/// with `HOME` at `/tmp` unless set.
pub fn step_command(job: &Job, step: usize) -> StepCommand {
    let s = &job.steps[step];
    let mut env = job.env.clone();
    env.extend(job.passed_env.clone());
    env.extend(s.env.clone());
    env.entry("HOME".into()).or_insert_with(|| "/tmp".into());
    StepCommand {
        env,
        run: s.run.clone(),
    }
}

/// Labels that name a job's containers, volumes and networks (the engine adds its owner).
pub fn job_labels(job: &Job) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = job
        .labels
        .iter()
        .filter(|(k, _)| k.starts_with("org.cordon."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(labels::MANAGED.to_string(), "true".to_string());
    l.insert(labels::JOB.to_string(), job.id.clone());
    l
}

/// A size-capped tmpfs of the job's scratch size, owned by the sandbox user.
fn tmpfs(job: &Job, mode: &'static str) -> Tmpfs {
    Tmpfs {
        size_bytes: job.limits.scratch.bytes(),
        uid: job.profile.uid,
        gid: job.profile.gid,
        mode,
    }
}

/// The job's scratch volumes, as (volume name, mount path). Volumes are needed where data
/// must cross the API (an uploaded workspace, collected artifacts) or outlive one step's
/// container; plain tmpfs mounts do otherwise.
pub fn scratch_volumes(job: &Job) -> Vec<(String, String)> {
    let mut wanted = Vec::new();
    let copy_ws = job
        .workspace
        .as_ref()
        .is_some_and(|w| w.mode == WorkspaceMode::Copy);
    let ws_artifacts = job
        .artifacts
        .iter()
        .any(|a| a != OUT_DIR && !a.starts_with("/out/"));
    let bind_ws = job
        .workspace
        .as_ref()
        .is_some_and(|w| w.mode == WorkspaceMode::Bind);
    if (copy_ws || job.steps.len() > 1 || ws_artifacts) && !bind_ws {
        wanted.push(("ws", job.workspace_path().to_string()));
    }
    if !job.artifacts.is_empty() || job.steps.len() > 1 {
        wanted.push(("out", OUT_DIR.to_string()));
    }
    wanted
        .into_iter()
        .map(|(suffix, target)| (format!("cordon-{}-{suffix}", job.id), target))
        .collect()
}

/// The job's scratch volumes as the engine makes them: size-capped tmpfs, owned by the
/// sandbox user, `0755`.
pub fn scratch_plan(job: &Job) -> Vec<VolumePlan> {
    scratch_volumes(job)
        .into_iter()
        .map(|(name, target)| VolumePlan {
            name,
            target,
            tmpfs: tmpfs(job, "0755"),
            labels: job_labels(job),
        })
        .collect()
}

/// Which sandboxes of the warm pool can serve `job`'s first step: the SHA-256 of that step's
/// plan with everything that names the job (its id in names, labels) left out. Two jobs with
/// the same key get sandboxes that differ in nothing else; the command and environment are
/// not in the plan (see [`GATE`]).
pub fn warm_key(job: &Job, image_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut anon = job.clone();
    anon.id = "warm".into();
    let scratch = Scratch {
        volumes: scratch_volumes(&anon),
    };
    let mut plan = step_plan(&anon, 0, image_id, &scratch);
    plan.labels.clear();
    // Maps are ordered and mounts sorted: equal plans give equal text.
    let text = serde_json::to_string(&plan).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The sandbox of `job.steps[step]` on `image_id`, with the job's `scratch` volumes.
pub fn step_plan(job: &Job, step: usize, image_id: &str, scratch: &Scratch) -> SandboxPlan {
    let p = &job.profile;
    let s = &job.steps[step];
    let limits = &job.limits;
    let mut labels = job_labels(job);
    labels.insert(labels::STEP.to_string(), s.name.clone());

    let ws_path = job.workspace_path().to_string();
    let mut mounts = vec![Mount::Tmpfs {
        target: "/tmp".into(),
        tmpfs: tmpfs(job, "1777"),
    }];
    for (name, target) in &scratch.volumes {
        mounts.push(Mount::Volume {
            target: target.clone(),
            volume: name.clone(),
        });
    }
    let has_volume = |path: &str| scratch.volumes.iter().any(|(_, t)| t == path);
    match &job.workspace {
        Some(w) if w.mode == WorkspaceMode::Bind => mounts.push(Mount::Bind {
            target: w.path.clone(),
            source: w.source.display().to_string(),
        }),
        _ if !has_volume(&ws_path) => mounts.push(Mount::Tmpfs {
            target: ws_path.clone(),
            tmpfs: tmpfs(job, "0755"),
        }),
        _ => {}
    }
    if !has_volume(OUT_DIR) {
        mounts.push(Mount::Tmpfs {
            target: OUT_DIR.into(),
            tmpfs: tmpfs(job, "0755"),
        });
    }
    mounts.sort_by(|a, b| a.target().cmp(b.target()));

    SandboxPlan {
        name: format!("cordon-{}-{step}", job.id),
        image: image_id.to_string(),
        runtime: p.runtime.clone(),
        user: User {
            uid: p.uid,
            gid: p.gid,
        },
        workdir: ws_path,
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            GATE.into(),
            "cordon-gate".into(),
        ],
        env: BTreeMap::from([("HOME".to_string(), "/tmp".to_string())]),
        security: Security {
            cap_drop: p.cap_drop.clone(),
            cap_add: p.cap_add.clone(),
            no_new_privileges: p.no_new_privileges,
            seccomp: p.seccomp_json.clone(),
            read_only_root: p.read_only_root,
            init: p.init,
            privileged: false,
        },
        limits: Limits {
            memory_bytes: limits.memory.bytes(),
            nano_cpus: (limits.cpus * 1e9).round() as i64,
            pids: engine_pids_limit(job),
            nofile: limits.nofile,
            core_bytes: 0,
            shm_bytes: limits.scratch.bytes().min(64 << 20),
        },
        mounts,
        network: match s.network {
            Network::None => NetworkAccess::None,
            Network::Egress => NetworkAccess::Default,
        },
        labels,
    }
}

/// A job's `prepare`: its internal network, and its sandbox on it with the strict settings
/// of a step, except that its root filesystem is writable (its changes become the
/// environment image) and its only network is that one, whose only way out is cordon's
/// allowlisting proxy (see [`prepare_command`]); no name service. Its environment is only
/// `HOME`: nothing of the job's is baked into the committed image.
pub fn prepare_plan(job: &Job, base_image_id: &str) -> PreparePlan {
    let prep = job
        .prepare
        .as_ref()
        .expect("prepare_plan is called for jobs with a prepare");
    let network = NetworkPlan {
        name: format!("cordon-{}-egress", job.id),
        labels: job_labels(job),
    };
    let mut sandbox = step_plan(job, 0, base_image_id, &Scratch::default());
    sandbox.name = format!("cordon-{}-prepare", job.id);
    sandbox
        .labels
        .insert(labels::STEP.to_string(), "prepare".to_string());
    if job.profile.is_runsc() {
        // gVisor here cannot start a sandbox with a network: the install (no test code)
        // runs under runc, with runc's meaning of the pids limit; the steps under runsc.
        sandbox.runtime = Some("runc".to_string());
        sandbox.limits.pids = job.limits.pids;
    }
    sandbox.security.read_only_root = false;
    // No name service: the proxy is reached by address, and the engine's embedded resolver
    // would otherwise answer (and forward) the prepare's queries.
    sandbox.network = NetworkAccess::Internal {
        network: network.name.clone(),
        dns: vec![NO_DNS.to_string()],
    };
    // The workspace path holds the key files in the root filesystem; only /tmp is tmpfs.
    sandbox.mounts = vec![Mount::Tmpfs {
        target: "/tmp".into(),
        tmpfs: tmpfs(job, "1777"),
    }];
    if let Some(ca) = &prep.ca_bundle {
        sandbox.mounts.push(Mount::Bind {
            target: CA_MOUNT.to_string(),
            source: ca.display().to_string(),
        });
    }
    PreparePlan { network, sandbox }
}

/// Everything `job` has the engine make, on `image_id` (its `prepare` on the same base).
pub fn job_plan(job: &Job, image_id: &str) -> JobPlan {
    let scratch = scratch_plan(job);
    let volumes = Scratch {
        volumes: scratch
            .iter()
            .map(|v| (v.name.clone(), v.target.clone()))
            .collect(),
    };
    JobPlan {
        prepare: job.prepare.as_ref().map(|_| prepare_plan(job, image_id)),
        steps: (0..job.steps.len())
            .map(|i| step_plan(job, i, image_id, &volumes))
            .collect(),
        scratch,
    }
}

/// Host threads gVisor's kernel takes for itself in a sandbox, beyond the job's processes: the
/// Sentry (a Go program) and its helpers, about 50 for a waiting sandbox here (ptrace platform).
pub const RUNSC_PIDS_BASE: i64 = 64;
/// Host threads per process of the job's under runsc (ptrace platform): each of its address
/// spaces is a stub process on the host, traced by threads of the Sentry; about 10 each here.
pub const RUNSC_PIDS_PER_PROCESS: i64 = 10;

/// The pids limit the engine is given for `job`'s sandboxes. Under runc, `limits.pids`: the
/// job's processes and threads. Under runsc the engine's limit counts host threads, gVisor's
/// own and about [`RUNSC_PIDS_PER_PROCESS`] per process of the job, so it is scaled to leave
/// the job about `limits.pids` processes: a fixed 32 would not even start the Sentry.
pub fn engine_pids_limit(job: &Job) -> i64 {
    let pids = job.limits.pids;
    if job.profile.is_runsc() {
        pids.saturating_mul(RUNSC_PIDS_PER_PROCESS)
            .saturating_add(RUNSC_PIDS_BASE)
    } else {
        pids
    }
}

/// Where a `prepare` container finds the CA bundle of `ca_bundle`.
pub const CA_MOUNT: &str = "/etc/cordon/ca-bundle.crt";

/// The resolver a `prepare` container's engine DNS forwards to: a reserved address (class E,
/// 240.0.0.0/4) that no network routes, dialled from the container's own network, which has
/// no route anywhere: so nothing is resolved.
pub const NO_DNS: &str = "240.0.0.1";

/// What a `prepare` container runs: the proxy settings pointing at cordon's allowlisting proxy
/// at `proxy`, the CA variables when `ca_bundle` is set, the job's and the prepare's own
/// variables (in that order, later ones winning), then `prepare.run`. They reach the command
/// through the gate, so none of them is in the container's environment or the image.
pub fn prepare_command(job: &Job, proxy: std::net::SocketAddr) -> StepCommand {
    let prep = job
        .prepare
        .as_ref()
        .expect("prepare_command is called for jobs with a prepare");
    let proxy_url = format!("http://{proxy}");
    let mut env = std::collections::BTreeMap::new();
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        env.insert(k.to_string(), proxy_url.clone());
    }
    for k in ["NO_PROXY", "no_proxy"] {
        env.insert(k.to_string(), "localhost,127.0.0.1".to_string());
    }
    if prep.ca_bundle.is_some() {
        for k in [
            "SSL_CERT_FILE",
            "PIP_CERT",
            "REQUESTS_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
        ] {
            env.insert(k.to_string(), CA_MOUNT.to_string());
        }
    }
    env.insert("HOME".to_string(), "/tmp".to_string());
    env.extend(job.env.clone());
    env.extend(prep.env.clone());
    StepCommand {
        env,
        run: prep.run.clone(),
    }
}

/// `'…'` with embedded quotes escaped, for a POSIX shell.
pub fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::spec;

    pub(crate) fn job() -> Job {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
        let path = dir.path().join("job.yaml");
        std::fs::write(
            &path,
            "steps: [{name: test, run: 'python3 -m pytest -q', timeout: 60s}]\nworkspace: { source: ./repo }\nartifacts: [/out/junit.xml]\nlimits: { cpus: 1.5, memory: 512MiB, pids: 128, scratch: 64MiB }\nenv: { PYTHONHASHSEED: '0' }\n",
        )
        .expect("write");
        let mut job = spec::load(&path, &spec::OperatorPolicy::for_cli()).expect("valid");
        job.id = "job-000000000000".into();
        job.workspace.as_mut().expect("ws").source = "/src/repo".into();
        job
    }

    /// The whole attack surface of a job, engine-neutral, reviewed as one snapshot: its
    /// scratch volumes, its `prepare`'s network and sandbox, each step's sandbox (strict).
    #[test]
    fn job_plan_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
        let path = dir.path().join("job.yaml");
        std::fs::write(
            &path,
            "workspace: { source: ./repo }\nprepare: { run: 'pip install -r requirements.txt' }\nsteps: [{name: test, run: pytest}, {name: report, run: 'coverage xml -o /out/cov.xml'}]\nartifacts: [/out/cov.xml]\nlimits: { cpus: 1.5, memory: 512MiB, pids: 128, scratch: 64MiB }\n",
        )
        .expect("write");
        let mut job = spec::load(&path, &spec::OperatorPolicy::for_cli()).expect("valid");
        job.id = "job-000000000000".into();
        let mut plan = job_plan(&job, "sha256:image");
        // The seccomp JSON is long and has its own tests; show only that it is there.
        let sandboxes = plan
            .steps
            .iter_mut()
            .chain(plan.prepare.as_mut().map(|p| &mut p.sandbox));
        for s in sandboxes {
            assert_eq!(s.security.seccomp, job.profile.seccomp_json);
            s.security.seccomp = "<sandbox-profiles/seccomp-strict.json>".into();
            // So is the gate.
            assert_eq!(s.command[2], GATE);
            s.command[2] = "<policy::GATE>".into();
        }
        insta::assert_yaml_snapshot!(plan);
    }

    /// Runs the gate with the host's `sh` in `go` mode (hold and send modes kill every
    /// process of their user, so they are only exercised in a container), in `dir`, with
    /// `before` ahead of the command on stdin. Returns its output with the hello checked and
    /// taken off.
    fn run_gate_in(
        dir: &std::path::Path,
        before: &[u8],
        command: &StepCommand,
    ) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", GATE, "cordon-gate"])
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut input = before.to_vec();
        input.extend(gate_input("NONCE", GateMode::Go, command, &[]));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write");
        let mut out = child.wait_with_output().expect("wait");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (hello, rest) = text.split_once('\n').expect("a hello line");
        assert_eq!(
            GateCaps::parse(hello),
            Some(GateCaps {
                load: true,
                send: true
            }),
            "this host has tar and dd"
        );
        out.stdout = rest.as_bytes().to_vec();
        out
    }

    fn run_gate(command: &StepCommand) -> std::process::Output {
        run_gate_in(&std::env::temp_dir(), b"", command)
    }

    /// A tar of `files` in `frame`-block frames, as a `load` request.
    fn load_request(files: &[(&str, &[u8])], frame: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).expect("append");
        }
        let tar = b.into_inner().expect("tar");
        let mut req = LOAD_REQUEST.to_vec();
        for chunk in tar.chunks(frame * 512) {
            req.extend(load_frame(chunk));
        }
        req.extend_from_slice(LOAD_END);
        req
    }

    /// The workspace comes through `load` in frames, byte-exact: the gate extracts it, says
    /// so, and then reads the command that follows the binary data correctly. A broken
    /// archive is reported, not fatal.
    #[test]
    fn the_gate_loads_a_framed_workspace_and_reads_on_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut input = load_request(&[("a.txt", b"alpha\n"), ("sub/big.bin", &big)], 3);
        input.extend(LOAD_REQUEST);
        input.extend(load_frame(&[7u8; 1024]));
        input.extend(LOAD_END);
        let command = StepCommand {
            env: Default::default(),
            run: "cat a.txt; wc -c < sub/big.bin; exit 3".into(),
        };
        let out = run_gate_in(dir.path(), &input, &command);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("cordon-loaded 0"));
        let second = lines.next().expect("second load answered");
        assert!(
            second.starts_with(GATE_LOADED) && second != "cordon-loaded 0",
            "{text}"
        );
        assert_eq!(lines.next(), Some("alpha"));
        assert_eq!(lines.next().map(str::trim), Some("200000"));
        assert_eq!(
            std::fs::read(dir.path().join("sub/big.bin")).expect("big"),
            big
        );
    }

    /// A `warm` request (paths with spaces, one missing) is answered, and the gate goes on to
    /// load and run exactly, with none of the warm's shell settings left behind.
    #[test]
    fn the_gate_reads_the_warm_paths_and_goes_on_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("lib dir/pkg");
        std::fs::create_dir_all(&tree).expect("mkdir");
        std::fs::write(tree.join("mod.py"), "x = 1\n").expect("write");
        let paths = vec![
            dir.path().join("lib dir").to_string_lossy().into_owned(),
            "/nonexistent/cordon/warm".to_string(),
        ];
        let mut input = warm_request(&paths);
        input.extend(load_request(&[("a.txt", b"alpha\n")], 1));
        let command = StepCommand {
            env: [("SPACED", "a  b*\nc")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            run: "printf '%s|' \"$SPACED\" *.txt".into(),
        };
        let work = tempfile::tempdir().expect("tempdir");
        let out = run_gate_in(work.path(), &input, &command);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "cordon-warmed\ncordon-loaded 0\na  b*\nc|a.txt|"
        );
    }

    #[test]
    fn warm_label_paths_are_absolute_and_plain() {
        assert_eq!(
            warm_paths("/usr/lib/python3.11: /opt/venv ::relative:/a*b:/-x:/"),
            vec!["/usr/lib/python3.11".to_string(), "/opt/venv".to_string()]
        );
        assert_eq!(
            warm_request(&["/opt/venv".into(), "/usr/lib/x y".into()]),
            b"warm\n2\nopt/venv\nusr/lib/x y\n".to_vec()
        );
    }

    /// The gate, run by the host's `sh` in `go` mode (hold mode kills every process of its
    /// user, so it is only exercised in a container), gets the environment and the command
    /// exactly, whatever quotes, newlines and backslashes they hold.
    #[test]
    fn the_gate_reads_environment_and_command_exactly() {
        let command = StepCommand {
            env: [
                ("PLAIN", "1"),
                ("QUOTES", "it's \"quoted\" $HOME `x`"),
                ("LINES", "first\n  second\\n\n"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            run: "printf '%s|' \"$PLAIN\" \"$QUOTES\" \"$LINES\"\necho \"[$0]\"\nexit 7".into(),
        };
        let out = run_gate(&command);
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "1|it's \"quoted\" $HOME `x`|first\n  second\\n\n|[cordon-step]\n"
        );
    }

    /// Variables of the job's cannot change the gate's own (its nonce, mode, exit code) nor
    /// how it reads them, and a command may start with a dash.
    #[test]
    fn the_jobs_variables_stay_out_of_the_gates_way() {
        let command = StepCommand {
            env: [
                ("IFS", "0123456789"),
                ("cordon_code", "0"),
                ("cordon_mode", "hold"),
                ("cordon_nonce", "forged"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(std::iter::once(("BAD NAME".to_string(), "x".to_string())))
            .collect(),
            run: "-x 2>/dev/null; echo \"$cordon_nonce\"; exit 7".into(),
        };
        let out = run_gate(&command);
        assert_eq!(out.status.code(), Some(7), "{out:?}");
        // The job sees its own variable; the gate kept its own nonce (it printed none: go).
        assert_eq!(String::from_utf8_lossy(&out.stdout), "forged\n");
    }

    /// A job with a `prepare` under the built-in `gvisor` profile.
    pub(crate) fn gvisor_job() -> Job {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
        let path = dir.path().join("job.yaml");
        std::fs::write(
            &path,
            "profile: gvisor\nsteps: [{name: test, run: 'true'}]\nworkspace: { source: ./repo }\nprepare: { run: 'pip install x' }\nlimits: { pids: 32 }\n",
        )
        .expect("write");
        let mut job = spec::load(&path, &spec::OperatorPolicy::for_cli()).expect("valid");
        job.id = "job-000000000000".into();
        job
    }
}
