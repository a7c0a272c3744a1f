//! An in-memory engine for unit tests: a [`Backend`] that keeps what it "created" in a set,
//! records every call in order, runs each command by a script (its output, how it ends) and
//! fails any call on request. The runner, the warm pool and the service's queue are tested
//! against it without Docker (`cargo nextest run --lib`); the real engine's tests stay in
//! `tests/`.
//!
//! What is alive is named like the real engine's objects: `container:<name>`,
//! `volume:<name>`, `network:<name>`. After any job, [`FakeEngine::live`] must be empty: every
//! path removes what it made.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::plan::{NetworkPlan, SandboxPlan, VolumePlan};
use super::{
    Backend, ByteStream, Egress, EgressNetworks, EngineInfo, ExitStatus, GateCaps, GateMode,
    Images, OutputStream, ProgressFn, Reaper, Sandbox, SandboxError, SandboxOutput, Scratch,
    StepCommand, TarStats, egress,
};
use crate::event::{self, AppliedSandbox};
use crate::spec::{Job, Workspace};

/// How a command runs in the fake engine, chosen by its `run` text.
#[derive(Debug, Clone, Default)]
pub(crate) struct Script {
    /// What it writes, in order.
    pub output: Vec<(event::Stream, Bytes)>,
    /// Its exit code.
    pub exit: i64,
    /// Whether the engine reports it killed for memory.
    pub oom: bool,
    /// Whether it runs until killed (no end, no exit status until then).
    pub hang: bool,
    /// Whether the sandbox ends with the command, without the gate's completion signal.
    pub dies: bool,
    /// Files it leaves, by absolute path: what the artifacts are collected from.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Script {
    pub fn exits(code: i64) -> Script {
        Script {
            exit: code,
            ..Default::default()
        }
    }

    pub fn prints(text: &str) -> Script {
        Script {
            output: vec![(event::Stream::Stdout, Bytes::from(text.to_string()))],
            ..Default::default()
        }
    }

    pub fn hangs() -> Script {
        Script {
            hang: true,
            ..Default::default()
        }
    }
}

#[derive(Default)]
struct State {
    calls: Vec<String>,
    counts: HashMap<String, usize>,
    /// (operation, which call of it fails, 1-based).
    failures: Vec<(String, usize)>,
    live: BTreeSet<String>,
    scripts: HashMap<String, Script>,
    images: HashMap<String, String>,
    written: u64,
    refusals: Vec<egress::Refusal>,
    cold_caches: bool,
    /// Files the commands left on the job's scratch, by absolute path: every container of
    /// the job sees them (they are on its volumes).
    files: Vec<(String, Vec<u8>)>,
    /// Sandboxes that ended while waiting (an engine restart, say).
    ended: BTreeSet<String>,
    serial: u64,
    /// Every sandbox plan the engine was given, in order.
    plans: Vec<SandboxPlan>,
}

/// The fake engine. Cheap to clone; clones share it.
#[derive(Clone, Default)]
pub(crate) struct FakeEngine {
    state: Arc<Mutex<State>>,
}

impl FakeEngine {
    pub fn new() -> FakeEngine {
        FakeEngine::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs commands whose `run` is `run` by `script` (others exit 0 silently).
    pub fn script(&self, run: &str, script: Script) -> &Self {
        self.lock().scripts.insert(run.to_string(), script);
        self
    }

    /// Makes the `nth` (1-based) call of `op` (a method name of [`Backend`] or [`Sandbox`])
    /// fail.
    pub fn fail(&self, op: &str, nth: usize) -> &Self {
        self.lock().failures.push((op.to_string(), nth));
        self
    }

    /// Makes an image present.
    pub fn image(&self, reference: &str, id: &str) -> &Self {
        self.lock()
            .images
            .insert(reference.to_string(), id.to_string());
        self
    }

    /// What a `prepare` container reports having written.
    pub fn writes(&self, bytes: u64) -> &Self {
        self.lock().written = bytes;
        self
    }

    /// Destinations the egress proxy of the next `prepare` refuses.
    pub fn refuses(&self, destinations: &[&str]) -> &Self {
        self.lock().refusals = destinations
            .iter()
            .map(|d| egress::Refusal {
                destination: d.to_string(),
                reason: "not allowed".into(),
            })
            .collect();
        self
    }

    pub fn with_cold_caches(&self) -> &Self {
        self.lock().cold_caches = true;
        self
    }

    /// Every sandbox started so far ends while waiting for its command.
    pub fn end_waiting_sandboxes(&self) {
        let mut s = self.lock();
        let containers: Vec<String> = s
            .live
            .iter()
            .filter_map(|l| l.strip_prefix("container:").map(str::to_string))
            .collect();
        s.ended.extend(containers);
    }

    /// Every call so far, in order: the operation, then what it was about.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// How many calls of `op` there were.
    pub fn count(&self, op: &str) -> usize {
        self.lock().counts.get(op).copied().unwrap_or(0)
    }

    /// Every sandbox plan the engine was given, in order.
    pub fn plans(&self) -> Vec<SandboxPlan> {
        self.lock().plans.clone()
    }

    /// What exists in the engine now.
    pub fn live(&self) -> BTreeSet<String> {
        self.lock().live.clone()
    }

    /// Records the call `op` on `what`, failing it if so scripted.
    fn call(&self, op: &str, what: &str) -> Result<(), SandboxError> {
        let mut s = self.lock();
        s.calls.push(format!("{op} {what}").trim_end().to_string());
        let n = {
            let c = s.counts.entry(op.to_string()).or_default();
            *c += 1;
            *c
        };
        if s.failures.iter().any(|(o, k)| o == op && *k == n) {
            return Err(SandboxError::Protocol(format!(
                "the fake engine failed {op} (call {n}) as scripted"
            )));
        }
        Ok(())
    }

    fn add(&self, thing: String) {
        self.lock().live.insert(thing);
    }

    fn remove(&self, thing: &str) {
        self.lock().live.remove(thing);
    }

    fn sandbox(&self, name: String) -> Box<dyn Sandbox> {
        self.add(format!("container:{name}"));
        Box::new(FakeSandbox {
            engine: self.clone(),
            name,
            started: false,
            script: None,
            killed: false,
        })
    }
}

#[async_trait]
impl Backend for FakeEngine {
    async fn engine(&self) -> Result<EngineInfo, SandboxError> {
        self.call("engine", "")?;
        Ok(EngineInfo {
            endpoint: "fake://".into(),
            server_version: "fake".into(),
            cpus: 2,
            memory_bytes: 4 << 30,
            cgroup_version: "2".into(),
            missing_enforcement: vec![],
            runtimes: BTreeMap::from([("runc".to_string(), vec![])]),
            default_runtime: "runc".into(),
        })
    }

    async fn create_scratch(&self, volumes: &[VolumePlan]) -> Result<Scratch, SandboxError> {
        let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
        self.call("create_scratch", &names.join(","))?;
        for v in volumes {
            self.add(format!("volume:{}", v.name));
        }
        Ok(Scratch {
            volumes: volumes
                .iter()
                .map(|v| (v.name.clone(), v.target.clone()))
                .collect(),
        })
    }

    async fn remove_scratch(&self, scratch: &Scratch) -> Result<(), SandboxError> {
        let names: Vec<&str> = scratch.volumes.iter().map(|(n, _)| n.as_str()).collect();
        self.call("remove_scratch", &names.join(","))?;
        for name in names {
            self.remove(&format!("volume:{name}"));
        }
        Ok(())
    }

    async fn create(&self, plan: &SandboxPlan) -> Result<Box<dyn Sandbox>, SandboxError> {
        self.call("create", &format!("{} {}", plan.name, plan.image))?;
        self.lock().plans.push(plan.clone());
        Ok(self.sandbox(plan.name.clone()))
    }

    async fn written(&self, id: &str) -> Result<u64, SandboxError> {
        self.call("written", id)?;
        Ok(self.lock().written)
    }

    async fn cold_caches(&self) -> bool {
        self.lock().cold_caches
    }
}

#[async_trait]
impl Images for FakeEngine {
    async fn local_image(&self, reference: &str) -> Result<Option<String>, SandboxError> {
        self.call("local_image", reference)?;
        Ok(self.lock().images.get(reference).cloned())
    }

    async fn build_image(
        &self,
        reference: &str,
        progress: ProgressFn<'_>,
    ) -> Result<String, SandboxError> {
        self.call("build_image", reference)?;
        progress("built".into());
        let id = format!("sha256:built-{reference}");
        self.image(reference, &id);
        Ok(id)
    }

    async fn warm_paths(&self, image_id: &str) -> Result<Vec<String>, SandboxError> {
        self.call("warm_paths", image_id)?;
        Ok(vec!["/usr/lib/python3".into()])
    }

    async fn evict_environments(&self, _cap: u64) -> Result<usize, SandboxError> {
        self.call("evict_environments", "")?;
        Ok(0)
    }
}

#[async_trait]
impl Reaper for FakeEngine {
    async fn reap(&self) -> Result<usize, SandboxError> {
        self.call("reap", "")?;
        Ok(0)
    }

    async fn remove_named(&self, prefix: &str) -> Result<usize, SandboxError> {
        self.call("remove_named", prefix)?;
        let mut s = self.lock();
        let before = s.live.len();
        s.live.retain(|l| {
            !l.split_once(':')
                .is_some_and(|(_, name)| name.starts_with(prefix))
        });
        Ok(before - s.live.len())
    }

    async fn remove_job(&self, job_id: &str) -> Result<usize, SandboxError> {
        self.call("remove_job", job_id)?;
        let mut s = self.lock();
        let before = s.live.len();
        let infix = format!("cordon-{job_id}-");
        s.live.retain(|l| !l.contains(&infix));
        Ok(before - s.live.len())
    }
}

#[async_trait]
impl EgressNetworks for FakeEngine {
    async fn create_egress(
        &self,
        plan: &NetworkPlan,
        _proxy: &egress::ProxyConfig,
    ) -> Result<(Egress, tokio::sync::mpsc::Receiver<egress::Refusal>), SandboxError> {
        self.call("create_egress", &plan.name)?;
        let network = plan.name.clone();
        let proxy_container = format!("{network}-proxy");
        self.add(format!("network:{network}"));
        self.add(format!("container:{proxy_container}"));
        let refusals = std::mem::take(&mut self.lock().refusals);
        let (tx, rx) = tokio::sync::mpsc::channel(refusals.len().max(1));
        for r in refusals {
            let _ = tx.try_send(r);
        }
        Ok((
            Egress {
                network,
                proxy_container,
                proxy: "10.0.0.2:3128".parse().expect("an address"),
            },
            rx,
        ))
    }

    async fn remove_egress(&self, egress: &Egress) -> Result<(), SandboxError> {
        self.call("remove_egress", &egress.network)?;
        self.remove(&format!("container:{}", egress.proxy_container));
        self.remove(&format!("network:{}", egress.network));
        Ok(())
    }
}

/// One fake sandbox: a name in the engine's set and the script of its command.
struct FakeSandbox {
    engine: FakeEngine,
    name: String,
    started: bool,
    script: Option<Script>,
    killed: bool,
}

impl FakeSandbox {
    fn call(&self, op: &str) -> Result<(), SandboxError> {
        self.engine.call(op, &self.name)
    }

    /// A tar of the script's files under `path` named as the engine's archive API names them
    /// (relative to `path`'s parent); an error like the engine's 404 if there are none.
    fn archive_of(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let files = self.engine.lock().files.clone();
        let parent = std::path::Path::new(path)
            .parent()
            .unwrap_or(std::path::Path::new("/"));
        let mut tar = tar::Builder::new(Vec::new());
        let mut any = false;
        for (file, data) in &files {
            if file != path && !file.starts_with(&format!("{path}/")) {
                continue;
            }
            any = true;
            let name = std::path::Path::new(file)
                .strip_prefix(parent)
                .unwrap_or(std::path::Path::new(file));
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, data.as_slice())
                .map_err(|e| SandboxError::Protocol(e.to_string()))?;
        }
        if !any {
            return Err(SandboxError::Protocol(format!(
                "404 not found: {path} (No such container:path)"
            )));
        }
        tar.into_inner()
            .map_err(|e| SandboxError::Protocol(e.to_string()))
    }

    /// What the gate sends after the command in [`GateMode::Send`]: a tar of every declared
    /// path that exists, names relative to `/`.
    fn sent(&self, artifacts: &[String]) -> Vec<u8> {
        let files = self.engine.lock().files.clone();
        let mut tar = tar::Builder::new(Vec::new());
        for (file, data) in &files {
            if !artifacts
                .iter()
                .any(|a| file == a || file.starts_with(&format!("{a}/")))
            {
                continue;
            }
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            let _ = tar.append_data(&mut header, file.trim_start_matches('/'), data.as_slice());
        }
        tar.into_inner().unwrap_or_default()
    }
}

#[async_trait]
impl Sandbox for FakeSandbox {
    fn id(&self) -> &str {
        &self.name
    }

    fn applied(&self) -> &AppliedSandbox {
        static APPLIED: std::sync::OnceLock<AppliedSandbox> = std::sync::OnceLock::new();
        APPLIED.get_or_init(AppliedSandbox::default)
    }

    async fn start(&mut self) -> Result<(), SandboxError> {
        self.call("start")?;
        self.started = true;
        Ok(())
    }

    fn caps(&self) -> GateCaps {
        GateCaps {
            load: true,
            send: true,
        }
    }

    fn is_waiting(&mut self) -> bool {
        let s = self.engine.lock();
        self.started
            && self.script.is_none()
            && !s.ended.contains(&self.name)
            && s.live.contains(&format!("container:{}", self.name))
    }

    async fn prewarm(&mut self, _paths: &[String], _within: Duration) -> Result<(), SandboxError> {
        self.call("prewarm")
    }

    async fn load(&mut self, _workspace: &Workspace) -> Result<TarStats, SandboxError> {
        self.call("load")?;
        Ok(TarStats::default())
    }

    async fn upload_files(
        &mut self,
        _dir: &str,
        _files: &[(String, Vec<u8>)],
    ) -> Result<(), SandboxError> {
        self.call("upload_files")
    }

    async fn commit(
        &mut self,
        reference: &str,
        _labels: HashMap<String, String>,
    ) -> Result<String, SandboxError> {
        self.call("commit")?;
        let id = {
            let mut s = self.engine.lock();
            s.serial += 1;
            format!("sha256:committed-{}", s.serial)
        };
        self.engine.image(reference, &id);
        Ok(id)
    }

    async fn release(
        &mut self,
        command: &StepCommand,
        mode: GateMode,
        artifacts: &[String],
    ) -> Result<OutputStream, SandboxError> {
        self.call("release")?;
        let script = self
            .engine
            .lock()
            .scripts
            .get(&command.run)
            .cloned()
            .unwrap_or_default();
        self.script = Some(script.clone());
        self.engine.lock().files.extend(script.files.clone());
        let mut items: Vec<Result<SandboxOutput, SandboxError>> = script
            .output
            .iter()
            .map(|(stream, data)| Ok(SandboxOutput::Chunk(*stream, data.clone())))
            .collect();
        let ends_held = mode != GateMode::Go && !script.dies && !script.hang;
        if ends_held {
            items.push(Ok(SandboxOutput::CommandDone));
        }
        if ends_held && mode == GateMode::Send {
            items.push(Ok(SandboxOutput::Trailer(
                event::Stream::Stdout,
                Bytes::from(self.sent(artifacts)),
            )));
        }
        let output = futures_util::stream::iter(items);
        Ok(if script.hang {
            Box::pin(output.chain(futures_util::stream::pending()))
        } else {
            Box::pin(output)
        })
    }

    async fn freeze(&mut self) -> Result<(), SandboxError> {
        self.call("freeze")
    }

    fn download(&self, path: &str) -> ByteStream {
        let got = self.call("download").and_then(|()| self.archive_of(path));
        Box::pin(futures_util::stream::iter([got.map(Bytes::from)]))
    }

    async fn finish(&mut self) -> Result<ExitStatus, SandboxError> {
        self.call("finish")?;
        let script = self.script.clone().unwrap_or_default();
        if script.hang && !self.killed {
            std::future::pending::<()>().await;
        }
        Ok(ExitStatus {
            code: script.exit,
            oom_killed: script.oom,
        })
    }

    async fn kill(&mut self) -> Result<(), SandboxError> {
        self.call("kill")?;
        self.killed = true;
        Ok(())
    }

    async fn destroy(&mut self) -> Result<(), SandboxError> {
        self.call("destroy")?;
        self.engine.remove(&format!("container:{}", self.name));
        Ok(())
    }
}

/// A validated job from a spec's YAML, under the CLI's operator policy.
pub(crate) fn job(yaml: &str) -> Job {
    let path = std::path::Path::new("job.yaml");
    let spec = crate::spec::parse_yaml(yaml, path).expect("a spec");
    crate::spec::validate(
        spec,
        std::path::Path::new("."),
        path,
        &crate::spec::OperatorPolicy::for_cli(),
    )
    .expect("a valid spec")
}
