//! The Docker Engine backend, through bollard.
//!
//! One container per step. Its main process is the `policy::GATE` shell under the engine's
//! init, so the engine's exit code, OOM flag and kill cover the step's whole process tree.
//! Workspace and `/out` live in per-job tmpfs volumes: size-capped, writable while the root
//! filesystem is read-only, and handed from one step's container to the next.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, InspectContainerOptions,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder, UploadToContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use super::archive::{self, WorkspaceOptions};
use super::{
    Backend, ByteStream, Egress, EgressNetworks, EngineInfo, ExitStatus, Images, OutputStream,
    ProgressFn, Reaper, Sandbox, SandboxError, SandboxOutput, Scratch, StepCommand, TarStats,
    labels, policy,
};
use super::{egress, sidecar};
use crate::event::{self, AppliedSandbox};
use crate::spec::Workspace;

mod tls;
use policy::GateMode;

mod config;

use super::plan::{NetworkPlan, SandboxPlan, VolumePlan};

/// How long an engine API call (not a job) may take before cordon gives up on it.
const API_TIMEOUT: Duration = Duration::from_secs(120);

/// The Docker backend. Cheap to clone; one engine connection shared by all jobs.
#[derive(Clone)]
pub struct DockerBackend {
    docker: Docker,
    endpoint: String,
    owner: String,
    /// Serializes image builds in this process.
    /// The engine's storage driver, asked once.
    storage_driver: Arc<tokio::sync::OnceCell<String>>,
}

impl DockerBackend {
    /// Connects as `docker` would: `DOCKER_HOST` (`unix://`, `tcp://`, `https://`), else the
    /// local socket. With `DOCKER_TLS_VERIFY` set (not empty), or an `https://` host: TLS,
    /// trusting the engine by `ca.pem` and showing it the client certificate `cert.pem` with
    /// `key.pem`, all three in `DOCKER_CERT_PATH` (default `~/.docker`), see [`tls`]. A missing
    /// or unreadable file, or a certificate either side refuses, is named with its fix.
    pub async fn connect() -> Result<DockerBackend, SandboxError> {
        let endpoint = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let unreachable = |source| SandboxError::EngineUnreachable {
            endpoint: endpoint.clone(),
            source,
        };
        // The cause of an unreachable engine, said with the variable or file to change.
        let because = |message: String| {
            unreachable(bollard::errors::Error::IOError {
                err: std::io::Error::other(message),
            })
        };
        let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
        let transport = tls::transport(&endpoint, set("DOCKER_TLS_VERIFY"), set("DOCKER_TLS"))
            .map_err(because)?;
        let cert_dir = tls::cert_dir(std::env::var_os("DOCKER_CERT_PATH"));
        let docker = match transport {
            tls::Transport::Tls => {
                tls::check_cert_dir(&cert_dir).map_err(because)?;
                // bollard's TLS needs a process-wide rustls provider: ring, as the client's.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Docker::connect_with_ssl(
                    &endpoint,
                    &cert_dir.join("key.pem"),
                    &cert_dir.join("cert.pem"),
                    &cert_dir.join("ca.pem"),
                    120,
                    bollard::API_DEFAULT_VERSION,
                )
            }
            // Not `connect_with_defaults`: it takes an empty DOCKER_TLS_VERIFY for a set one.
            tls::Transport::PlainTcp => {
                Docker::connect_with_http(&endpoint, 120, bollard::API_DEFAULT_VERSION)
            }
            tls::Transport::Local => Docker::connect_with_defaults(),
        };
        // The client's timeout bounds single API calls; jobs are bounded by cordon's own timers
        // (attach and wait streams may legitimately run for hours).
        let docker = docker
            .map_err(unreachable)?
            .with_timeout(Duration::from_secs(24 * 3600));
        let negotiated = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable(bollard::errors::Error::RequestTimeoutError))?;
        let docker = match negotiated {
            Ok(docker) => docker,
            Err(e) => {
                let why = match tls::explain(&e, &cert_dir) {
                    None if transport == tls::Transport::Tls => {
                        tls::diagnose(&endpoint, &cert_dir).await
                    }
                    why => why,
                };
                return Err(why.map_or_else(|| unreachable(e), because));
            }
        };
        Ok(DockerBackend {
            docker,
            endpoint,
            owner: owner_label(),
            storage_driver: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Creates a container from `config`, then refuses it unless the engine recorded every
    /// setting as asked (and gave no warning).
    async fn create_from(
        &self,
        plan: &SandboxPlan,
        config: bollard::models::ContainerCreateBody,
    ) -> Result<Box<dyn Sandbox>, SandboxError> {
        let name = &plan.name;
        let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
            .name(name)
            .build();
        let created = api(
            "creating the sandbox container",
            self.docker.create_container(Some(opts), config.clone()),
        )
        .await?;
        let mut sandbox = DockerSandbox {
            docker: self.docker.clone(),
            id: created.id.clone(),
            nonce: format!("cordon-done-{}", uuid::Uuid::new_v4().simple()),
            stdin: None,
            gate: None,
            caps: policy::GateCaps::default(),
            frozen: false,
            destroyed: false,
            uid: plan.user.uid,
            gid: plan.user.gid,
            workspace_path: plan.workdir.clone(),
            runsc: config
                .host_config
                .as_ref()
                .and_then(|h| h.runtime.as_deref())
                == Some(crate::spec::profile::RUNSC),
            applied: AppliedSandbox::default(),
        };
        // Refuse to run under limits the engine did not apply.
        let mut wrong: Vec<String> = created
            .warnings
            .iter()
            .filter(|w| !w.trim().is_empty())
            .map(|w| format!("engine warning: {w}"))
            .collect();
        match api(
            "inspecting the sandbox container",
            self.docker
                .inspect_container(&created.id, None::<InspectContainerOptions>),
        )
        .await
        {
            Ok(got) => {
                wrong.extend(config::verify(&config, &got));
                sandbox.applied = super::readback::applied(&got);
            }
            Err(e) => {
                let _ = sandbox.destroy().await;
                return Err(e);
            }
        }
        if !wrong.is_empty() {
            let _ = sandbox.destroy().await;
            return Err(SandboxError::LimitNotEnforced {
                what: "every setting of the profile".into(),
                detail: wrong.join("; "),
            });
        }
        Ok(Box::new(sandbox))
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// `hostname:pid` of this process, written on everything it creates.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

fn owner_label() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{host}:{}", std::process::id())
}

/// Whether the cordon process that wrote `owner` is gone (so its leftovers may be reaped).
fn owner_is_gone(owner: &str) -> bool {
    let me = owner_label();
    let (my_host, _) = me.rsplit_once(':').unwrap_or((&me, ""));
    let Some((host, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    if host != my_host {
        return false; // another host's process: not ours to judge
    }
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if pid as u32 == std::process::id() {
        return false;
    }
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

async fn api<T>(
    action: &str,
    fut: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, SandboxError> {
    match tokio::time::timeout(API_TIMEOUT, fut).await {
        Ok(r) => r.map_err(SandboxError::engine(action)),
        Err(_) => Err(SandboxError::Engine {
            action: action.to_string(),
            source: bollard::errors::Error::RequestTimeoutError,
        }),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[async_trait]
impl Backend for DockerBackend {
    async fn engine(&self) -> Result<EngineInfo, SandboxError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|source| SandboxError::EngineUnreachable {
                endpoint: self.endpoint.clone(),
                source,
            })?;
        let mut missing = Vec::new();
        for (flag, what) in [
            (info.memory_limit, "memory limits"),
            (info.swap_limit, "swap limits (memory+swap)"),
            (info.cpu_cfs_quota, "CPU quotas (CFS)"),
            (info.pids_limit, "pids limits"),
        ] {
            if flag == Some(false) {
                missing.push(what.to_string());
            }
        }
        Ok(EngineInfo {
            endpoint: self.endpoint.clone(),
            server_version: info.server_version.unwrap_or_default(),
            cpus: info.ncpu.unwrap_or(0).max(0) as u64,
            memory_bytes: info.mem_total.unwrap_or(0).max(0) as u64,
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "1".into()),
            missing_enforcement: missing,
            runtimes: info
                .runtimes
                .unwrap_or_default()
                .into_iter()
                .map(|(name, r)| (name, r.runtime_args.unwrap_or_default()))
                .collect(),
            default_runtime: info.default_runtime.unwrap_or_default(),
        })
    }

    async fn create_scratch(&self, volumes: &[VolumePlan]) -> Result<Scratch, SandboxError> {
        let mut scratch = Scratch::default();
        for v in volumes {
            let opts = HashMap::from([
                ("type".to_string(), "tmpfs".to_string()),
                ("device".to_string(), "tmpfs".to_string()),
                ("o".to_string(), config::volume_options(&v.tmpfs)),
            ]);
            let req = VolumeCreateRequest {
                name: Some(v.name.clone()),
                driver: Some("local".into()),
                driver_opts: Some(opts),
                labels: Some(config::with_owner(&v.labels, &self.owner)),
                ..Default::default()
            };
            let created = api("creating scratch volume", self.docker.create_volume(req)).await;
            if let Err(e) = created {
                let _ = self.remove_scratch(&scratch).await;
                return Err(e);
            }
            scratch.volumes.push((v.name.clone(), v.target.clone()));
        }
        Ok(scratch)
    }

    async fn remove_scratch(&self, scratch: &Scratch) -> Result<(), SandboxError> {
        let mut first_err = None;
        for (name, _) in &scratch.volumes {
            let opts = RemoveVolumeOptionsBuilder::default().force(true).build();
            match tokio::time::timeout(API_TIMEOUT, self.docker.remove_volume(name, Some(opts)))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) if is_not_found(&e) => {}
                Ok(Err(source)) => {
                    first_err.get_or_insert(SandboxError::Engine {
                        action: format!("removing volume {name}"),
                        source,
                    });
                }
                Err(_) => {
                    first_err.get_or_insert(SandboxError::Engine {
                        action: format!("removing volume {name}"),
                        source: bollard::errors::Error::RequestTimeoutError,
                    });
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn create(&self, plan: &SandboxPlan) -> Result<Box<dyn Sandbox>, SandboxError> {
        let config = config::container_body(plan, &self.owner);
        self.create_from(plan, config).await
    }

    async fn written(&self, id: &str) -> Result<u64, SandboxError> {
        let opts = bollard::query_parameters::InspectContainerOptionsBuilder::default()
            .size(true)
            .build();
        let got = api(
            "measuring what the sandbox wrote",
            self.docker.inspect_container(id, Some(opts)),
        )
        .await?;
        Ok(got.size_rw.unwrap_or(0).max(0) as u64)
    }

    async fn cold_caches(&self) -> bool {
        let driver = self
            .storage_driver
            .get_or_init(|| async {
                match self.docker.info().await {
                    Ok(info) => info.driver.unwrap_or_default(),
                    Err(e) => {
                        debug!(error = %e, "could not ask the engine for its storage driver");
                        String::new()
                    }
                }
            })
            .await;
        matches!(driver.as_str(), "fuse-overlayfs" | "vfs")
    }
}

#[async_trait]
impl Images for DockerBackend {
    async fn local_image(&self, reference: &str) -> Result<Option<String>, SandboxError> {
        crate::image::local_image_id(&self.docker, reference)
            .await
            .map_err(|source| SandboxError::ImageBuild {
                reference: reference.to_string(),
                source,
            })
    }

    async fn build_image(
        &self,
        reference: &str,
        progress: ProgressFn<'_>,
    ) -> Result<String, SandboxError> {
        let Some(recipe) = crate::image::recipe_for_reference(reference) else {
            return Err(SandboxError::ImageMissing {
                reference: reference.to_string(),
            });
        };
        // `image::build` takes the image's build lock, and answers with the image another
        // build made while it waited.
        let report = |p: crate::image::ImageProgress| match p {
            crate::image::ImageProgress::Stage(s) => progress(s),
            crate::image::ImageProgress::Line(l) => progress(format!("  {l}")),
        };
        crate::image::build(
            &self.docker,
            recipe,
            &crate::image::BuildOptions::default(),
            &report,
        )
        .await
        .map_err(|source| SandboxError::ImageBuild {
            reference: reference.to_string(),
            source,
        })
    }

    async fn warm_paths(&self, image_id: &str) -> Result<Vec<String>, SandboxError> {
        let info = api(
            "inspecting the image for its warm paths",
            self.docker.inspect_image(image_id),
        )
        .await?;
        Ok(info
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get(policy::WARM_LABEL).map(|v| policy::warm_paths(v)))
            .unwrap_or_default())
    }

    async fn evict_environments(&self, cap: u64) -> Result<usize, SandboxError> {
        let policy = crate::envcache::PrunePolicy {
            max_total_bytes: Some(cap),
            ..Default::default()
        };
        crate::envcache::prune(&self.docker, &policy)
            .await
            .map(|v| v.len())
            .map_err(|e| SandboxError::Protocol(crate::error::error_chain(&e)))
    }
}

#[async_trait]
impl Reaper for DockerBackend {
    async fn remove_named(&self, prefix: &str) -> Result<usize, SandboxError> {
        // The engine's name filter matches anywhere in a name: check the start here.
        let ours = |name: &str, _: Option<&HashMap<String, String>>| {
            name.trim_start_matches('/').starts_with(prefix)
        };
        self.remove_leftovers(Some(prefix), &ours).await
    }

    async fn remove_job(&self, job_id: &str) -> Result<usize, SandboxError> {
        let of_job = |_: &str, labels: Option<&HashMap<String, String>>| {
            labels
                .and_then(|l| l.get(labels::JOB))
                .is_some_and(|j| j == job_id)
        };
        self.remove_leftovers(None, &of_job).await
    }

    async fn reap(&self) -> Result<usize, SandboxError> {
        let gone = |_: &str, labels: Option<&HashMap<String, String>>| {
            owner_is_gone(
                labels
                    .and_then(|l| l.get(labels::OWNER))
                    .map(String::as_str)
                    .unwrap_or_default(),
            )
        };
        self.remove_leftovers(None, &gone).await
    }
}

#[async_trait]
impl EgressNetworks for DockerBackend {
    async fn create_egress(
        &self,
        plan: &NetworkPlan,
        proxy: &egress::ProxyConfig,
    ) -> Result<(Egress, tokio::sync::mpsc::Receiver<egress::Refusal>), SandboxError> {
        let network = plan.name.clone();
        let req = bollard::models::NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            internal: Some(true),
            // The bridge gets no address on the engine's host, so the network has no way to
            // any host port; only the proxy's container is on it with the job's.
            options: Some(HashMap::from([(
                "com.docker.network.bridge.inhibit_ipv4".to_string(),
                "true".to_string(),
            )])),
            labels: Some(config::with_owner(&plan.labels, &self.owner)),
            ..Default::default()
        };
        api(
            "creating the egress network",
            self.docker.create_network(req),
        )
        .await?;
        let proxy_name = format!("{network}-proxy");
        let started = async {
            let image = sidecar::image(&self.docker).await?;
            let config = config::egress_proxy_body(plan, &image, &self.owner, proxy);
            let opts = bollard::query_parameters::CreateContainerOptionsBuilder::default()
                .name(&proxy_name)
                .build();
            let created = api(
                "creating the egress proxy",
                self.docker.create_container(Some(opts), config),
            )
            .await?;
            sidecar::start(&self.docker, &created.id, &network)
                .await
                .map(|(addr, refusals)| (created.id, addr, refusals))
        }
        .await;
        match started {
            Ok((proxy_container, proxy, refusals)) => Ok((
                Egress {
                    network,
                    proxy_container,
                    proxy,
                },
                refusals,
            )),
            Err(e) => {
                let _ = self.remove_container_by_name(&proxy_name).await;
                let _ = self.remove_network(&network).await;
                Err(e)
            }
        }
    }

    async fn remove_egress(&self, egress: &Egress) -> Result<(), SandboxError> {
        self.remove_container_by_name(&egress.proxy_container)
            .await?;
        self.remove_network(&egress.network).await
    }
}

impl DockerBackend {
    /// Removes a container (by name or id) with its anonymous volumes. Idempotent.
    async fn remove_container_by_name(&self, name: &str) -> Result<(), SandboxError> {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let r = tokio::time::timeout(API_TIMEOUT, self.docker.remove_container(name, Some(opts)));
        removal(format!("removing container {name}"), r.await)
    }

    /// Removes a network. Idempotent.
    async fn remove_network(&self, name: &str) -> Result<(), SandboxError> {
        let r = tokio::time::timeout(API_TIMEOUT, self.docker.remove_network(name));
        removal(format!("removing network {name}"), r.await)
    }
}

/// A removal's result: gone already is done; a timeout is an engine error like the others.
fn removal(
    action: String,
    r: Result<Result<(), bollard::errors::Error>, tokio::time::error::Elapsed>,
) -> Result<(), SandboxError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if is_not_found(&e) => Ok(()),
        Ok(Err(source)) => Err(SandboxError::Engine { action, source }),
        Err(_) => Err(SandboxError::Engine {
            action,
            source: bollard::errors::Error::RequestTimeoutError,
        }),
    }
}

/// Whether a container or volume (its name, its labels) is to be removed.
type LeftoverFilter<'a> = dyn Fn(&str, Option<&HashMap<String, String>>) -> bool + Sync + 'a;

impl DockerBackend {
    /// Removes cordon's containers and volumes (optionally only those whose name contains
    /// `name`) for which `pick(name, labels)` holds. Returns how many it removed.
    async fn remove_leftovers(
        &self,
        name: Option<&str>,
        pick: &LeftoverFilter<'_>,
    ) -> Result<usize, SandboxError> {
        let mut filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}=true", labels::MANAGED)],
        )]);
        if let Some(name) = name {
            filters.insert("name".to_string(), vec![name.to_string()]);
        }
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = api(
            "listing cordon containers",
            self.docker.list_containers(Some(opts)),
        )
        .await?;
        let mut removed = 0;
        for c in containers {
            let name = c.names.iter().flatten().next().cloned().unwrap_or_default();
            let (true, Some(id)) = (pick(&name, c.labels.as_ref()), c.id) else {
                continue;
            };
            let opts = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match self.docker.remove_container(&id, Some(opts)).await {
                Ok(()) => {
                    removed += 1;
                    warn!(container = %id, %name, "removed a sandbox a cordon process left behind");
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => warn!(container = %id, error = %e, "could not remove a leftover sandbox"),
            }
        }
        let vopts = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let volumes = api(
            "listing cordon volumes",
            self.docker.list_volumes(Some(vopts)),
        )
        .await?;
        for v in volumes.volumes.unwrap_or_default() {
            if !pick(&v.name, Some(&v.labels)) {
                continue;
            }
            let opts = RemoveVolumeOptionsBuilder::default().force(true).build();
            match self.docker.remove_volume(&v.name, Some(opts)).await {
                Ok(()) => removed += 1,
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    debug!(volume = %v.name, error = %e, "could not remove a leftover volume")
                }
            }
        }
        // Networks last: the engine refuses to remove one while a container is on it.
        let nopts = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let networks = api(
            "listing cordon networks",
            self.docker.list_networks(Some(nopts)),
        )
        .await?;
        for n in networks {
            let name = n.name.clone().unwrap_or_default();
            if name.is_empty() || !pick(&name, n.labels.as_ref()) {
                continue;
            }
            match self.remove_network(&name).await {
                Ok(()) => {
                    removed += 1;
                    warn!(network = %name, "removed a network a cordon process left behind");
                }
                Err(e) => {
                    debug!(network = %name, error = %e, "could not remove a leftover network")
                }
            }
        }
        Ok(removed)
    }
}

/// One step's container.
pub struct DockerSandbox {
    docker: Docker,
    id: String,
    nonce: String,
    stdin: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// The container's output from start to release: the gate's own lines.
    gate: Option<GateOutput>,
    caps: policy::GateCaps,
    frozen: bool,
    destroyed: bool,
    uid: u32,
    gid: u32,
    workspace_path: String,
    /// It runs under gVisor, where the engine's OOM flag can miss (see [`oom_killed`]).
    runsc: bool,
    /// What the engine recorded for it, read back once created.
    applied: AppliedSandbox,
}

/// How long after a runsc sandbox's exit the engine's `oom` event may still come.
const OOM_EVENT_GRACE: Duration = Duration::from_secs(2);

/// Whether the engine saw the sandbox's memory cgroup run out, given its record (`flag`,
/// the exit `code`). Under runc the flag says it: the OOM killer takes a process of the
/// job's, the gate lives on, and the engine has the kernel's notice before the exit.
/// Under runsc the victim is a process of gVisor's own (a stub with the job's memory
/// mapped), the whole sandbox ends at once with 137, and the engine can handle the exit
/// before the kernel's notice, leaving the flag unset (2 runs in 30 on a loaded 2-core VM).
/// The notice still becomes the container's `oom` event: for a runsc sandbox killed by
/// SIGKILL without the flag, cordon asks the engine's event log for it, waiting up to
/// [`OOM_EVENT_GRACE`] for a late one. The job cannot raise that event but by filling its
/// memory limit. (Its memory cgroup's counters are no help: they go with the container.)
async fn oom_killed(docker: &Docker, id: &str, runsc: bool, flag: bool, code: i64) -> bool {
    if flag || !runsc || code != 137 {
        return flag;
    }
    let seen = engine_saw_oom(docker, id, OOM_EVENT_GRACE).await;
    if seen {
        debug!(
            container = id,
            "the engine's OOM flag is unset, its oom event says the sandbox ran out of memory"
        );
    }
    seen
}

/// Whether the engine has logged an `oom` event for container `id` (the kernel's notice that
/// its memory cgroup ran out), or does within `within`.
pub async fn engine_saw_oom(docker: &Docker, id: &str, within: Duration) -> bool {
    let filters = HashMap::from([
        ("container".to_string(), vec![id.to_string()]),
        ("type".to_string(), vec!["container".to_string()]),
        ("event".to_string(), vec!["oom".to_string()]),
    ]);
    // From the start of the engine's log, which it keeps in memory (its last 256 events):
    // the filter names this container only.
    let opts = bollard::query_parameters::EventsOptionsBuilder::default()
        .since("0")
        .filters(&filters)
        .build();
    let mut events = docker.events(Some(opts));
    let seen = tokio::time::timeout(within, async {
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) if ev.action.as_deref() == Some("oom") => return true,
                Ok(_) => {}
                Err(e) => {
                    debug!(error = %e, "reading the engine's events for an OOM");
                    return false;
                }
            }
        }
        false
    })
    .await;
    seen.unwrap_or(false)
}

impl DockerSandbox {
    /// Streams the workspace to the gate's `load` over stdin (see [`policy::GATE`]), reading
    /// its output at the same time so a flood of `tar` errors cannot stall the upload.
    async fn load_through_gate(
        &mut self,
        workspace: &Workspace,
        opts: WorkspaceOptions,
    ) -> Result<TarStats, SandboxError> {
        let (tar, writer) = archive::workspace_tar_stream(workspace.source.clone(), opts);
        let (Some(stdin), Some(gate)) = (self.stdin.as_mut(), self.gate.as_mut()) else {
            return Err(SandboxError::Protocol(
                "the sandbox is not waiting for its workspace".into(),
            ));
        };
        // It owns the archive stream: dropped unfinished, it stops the archiver.
        let send = send_framed(stdin, tar);
        let ack = async {
            let (line, stderr) = gate.line("load the workspace").await?;
            let code = line
                .strip_prefix(policy::GATE_LOADED)
                .and_then(|c| c.trim().parse::<i32>().ok())
                .ok_or_else(|| {
                    SandboxError::Protocol(format!(
                        "the sandbox's gate answered {line:?} to a workspace load"
                    ))
                })?;
            Ok::<_, SandboxError>((code, stderr))
        };
        // Each write, and the answer after the last, must come within API_TIMEOUT: the
        // image's own tools run the load, and an image a `prepare` tampered with may stall.
        // The engine keeps the output open while stdin is, so a sandbox that dies (its
        // memory full of workspace, say) is noticed by waiting on it too.
        let exited = {
            let opts = WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build();
            let mut wait = self.docker.wait_container(&self.id, Some(opts));
            async move {
                let _ = wait.next().await;
            }
        };
        let (sent, acked) = {
            let mut send = std::pin::pin!(send);
            let mut ack = std::pin::pin!(ack);
            let mut exited = std::pin::pin!(exited);
            let (mut sent, mut acked) = (None, None);
            while acked.is_none() {
                tokio::select! {
                    r = &mut send, if sent.is_none() => sent = Some(r),
                    r = &mut ack => acked = Some(r),
                    () = &mut exited => {
                        acked = Some(Err(SandboxError::Protocol(
                            "the sandbox ended while its gate was loading the workspace".into(),
                        )));
                    }
                    () = tokio::time::sleep(API_TIMEOUT), if sent.is_some() => {
                        acked = Some(Err(SandboxError::Protocol(
                            "the sandbox's gate took the workspace but did not answer within 2 minutes".into(),
                        )));
                    }
                }
            }
            (sent, acked.unwrap_or(Ok((0, Vec::new()))))
        };
        // An unfinished send stopped the archiver; its own error matters only otherwise.
        let stopped = sent.is_none();
        let sent = sent.unwrap_or(Ok(()));
        let written = writer
            .await
            .map_err(|e| SandboxError::Protocol(format!("the workspace archiver stopped: {e}")))?;
        // The archiver's own error (an unreadable file, say) explains a failure best.
        let stats = match written {
            Ok(stats) => stats,
            Err(archive::ArchiveError::Cancelled) if stopped => TarStats::default(),
            Err(source) => {
                return Err(SandboxError::Archive {
                    action: format!("reading the workspace {}", workspace.source.display()),
                    source,
                });
            }
        };
        let what = if stopped {
            "the workspace".to_string()
        } else {
            format!(
                "the workspace ({} files, {} bytes)",
                stats.files, stats.bytes
            )
        };
        let failed = match (sent, acked) {
            (_, Ok((0, _))) => return Ok(stats),
            (_, Ok((code, stderr))) => {
                let text = String::from_utf8_lossy(&stderr);
                if text.contains("No space left") || text.contains("Wrote only") {
                    over_scratch(&what)
                } else {
                    format!(
                        "extracting {what} in the sandbox failed (tar exit {code}){}; if it is near limits.scratch, raise that or exclude more",
                        stderr_note(&stderr)
                    )
                }
            }
            (Err(e), Err(_)) => format!("sending the workspace to the sandbox: {e}"),
            (Ok(()), Err(e)) => e.to_string(),
        };
        Err(load_failed(&self.docker, &self.id, self.runsc, &what, failed).await)
    }

    async fn write_stdin(&mut self, data: &[u8], close: bool) -> Result<(), SandboxError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Ok(());
        };
        let res = async {
            stdin.write_all(data).await?;
            stdin.flush().await?;
            if close {
                stdin.shutdown().await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if close {
            self.stdin = None;
        }
        res.map_err(|e| {
            SandboxError::Protocol(format!("writing to the sandbox's control input: {e}"))
        })
    }
}

#[async_trait]
impl Sandbox for DockerSandbox {
    fn id(&self) -> &str {
        &self.id
    }

    fn applied(&self) -> &AppliedSandbox {
        &self.applied
    }

    async fn start(&mut self) -> Result<(), SandboxError> {
        let opts = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let attached = api(
            "attaching to the sandbox",
            self.docker.attach_container(&self.id, Some(opts)),
        )
        .await?;
        self.stdin = Some(attached.input);
        api(
            "starting the sandbox",
            self.docker.start_container(&self.id, None),
        )
        .await?;
        let output = attached
            .output
            .map_err(|e| SandboxError::Engine {
                action: "reading the sandbox's output".into(),
                source: e,
            })
            .boxed();
        let mut gate = GateOutput {
            stream: output,
            pending: VecDeque::new(),
        };
        let (hello, stderr) = tokio::time::timeout(API_TIMEOUT, gate.line("start"))
            .await
            .map_err(|_| {
                SandboxError::Protocol("the sandbox's gate did not start within 2 minutes".into())
            })??;
        self.caps = policy::GateCaps::parse(&hello).ok_or_else(|| {
            SandboxError::Protocol(format!(
                "the sandbox's gate did not start properly (it said {hello:?}{}): is the image's /bin/sh a POSIX shell?",
                stderr_note(&stderr)
            ))
        })?;
        self.gate = Some(gate);
        Ok(())
    }

    fn caps(&self) -> policy::GateCaps {
        self.caps
    }

    fn is_waiting(&mut self) -> bool {
        use futures_util::FutureExt;
        match self.gate.as_mut() {
            Some(gate) => gate.pending.is_empty() && gate.stream.next().now_or_never().is_none(),
            None => false,
        }
    }

    async fn prewarm(&mut self, paths: &[String], within: Duration) -> Result<(), SandboxError> {
        let (Some(stdin), Some(gate)) = (self.stdin.as_mut(), self.gate.as_mut()) else {
            return Err(SandboxError::Protocol(
                "the sandbox is not waiting to be prewarmed".into(),
            ));
        };
        let request = policy::warm_request(paths);
        let warm = async {
            let written = match write_gate(stdin, &request).await {
                Ok(()) => stdin.flush().await,
                Err(e) => Err(e),
            };
            written.map_err(|e| {
                SandboxError::Protocol(format!("writing to the sandbox's control input: {e}"))
            })?;
            let (line, stderr) = gate.line("read the image's library trees").await?;
            if line == policy::GATE_WARMED {
                Ok(())
            } else {
                Err(SandboxError::Protocol(format!(
                    "the sandbox's gate answered {line:?} to prewarming{}",
                    stderr_note(&stderr)
                )))
            }
        };
        tokio::time::timeout(within, warm).await.map_err(|_| {
            SandboxError::Protocol(format!(
                "reading the image's library trees took over {} s",
                within.as_secs()
            ))
        })?
    }

    async fn load(&mut self, workspace: &Workspace) -> Result<TarStats, SandboxError> {
        let opts = WorkspaceOptions {
            excludes: workspace.excludes.clone(),
            uid: self.uid as u64,
            gid: self.gid as u64,
            max_bytes: u64::MAX,
            max_files: 1_000_000,
        };
        if self.caps.load && self.gate.is_some() && self.stdin.is_some() {
            return self.load_through_gate(workspace, opts).await;
        }
        let (stream, writer) = archive::workspace_tar_stream(workspace.source.clone(), opts);
        let upload_opts = UploadToContainerOptionsBuilder::default()
            .path(&self.workspace_path)
            .no_overwrite_dir_non_dir("true")
            .build();
        let uploaded = self
            .docker
            .upload_to_container(
                &self.id,
                Some(upload_opts),
                bollard::body_try_stream(stream),
            )
            .await;
        let written = writer
            .await
            .map_err(|e| SandboxError::Protocol(format!("the workspace archiver stopped: {e}")))?;
        // The archiver's own error (an unreadable file, say) explains an upload failure best.
        let stats = written.map_err(|source| SandboxError::Archive {
            action: format!("reading the workspace {}", workspace.source.display()),
            source,
        })?;
        uploaded.map_err(|source| {
            let msg = source.to_string();
            if msg.contains("no space left") {
                SandboxError::Protocol(over_scratch(&format!(
                    "the workspace ({} files, {} bytes)",
                    stats.files, stats.bytes
                )))
            } else {
                SandboxError::Engine {
                    action: "uploading the workspace".into(),
                    source,
                }
            }
        })?;
        Ok(stats)
    }

    async fn upload_files(
        &mut self,
        dir: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<(), SandboxError> {
        let mut builder = tar::Builder::new(Vec::new());
        let base = dir.trim_start_matches('/');
        let mut dirs: Vec<String> = Vec::new();
        for (path, _) in files {
            let mut p = std::path::Path::new(base).join(path);
            while let Some(parent) = p.parent() {
                if parent.as_os_str().is_empty() {
                    break;
                }
                let d = parent.to_string_lossy().into_owned();
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
                p = parent.to_path_buf();
            }
        }
        dirs.sort();
        let tar_err =
            |e: std::io::Error| SandboxError::Protocol(format!("building the upload: {e}"));
        for d in dirs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_uid(self.uid as u64);
            h.set_gid(self.gid as u64);
            h.set_size(0);
            builder
                .append_data(&mut h, &d, std::io::empty())
                .map_err(tar_err)?;
        }
        for (path, contents) in files {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_uid(self.uid as u64);
            h.set_gid(self.gid as u64);
            h.set_size(contents.len() as u64);
            builder
                .append_data(
                    &mut h,
                    std::path::Path::new(base).join(path),
                    contents.as_slice(),
                )
                .map_err(tar_err)?;
        }
        let bytes = builder.into_inner().map_err(tar_err)?;
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        api(
            "uploading files into the sandbox",
            self.docker
                .upload_to_container(&self.id, Some(opts), bollard::body_full(bytes.into())),
        )
        .await
    }

    async fn commit(
        &mut self,
        reference: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, SandboxError> {
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        // The engine copies the container's labels into the image unless they are given:
        // blank cordon's own, or every container made from the image would look like a
        // leftover sandbox to the reaper.
        let mut labels = labels;
        for key in [labels::MANAGED, labels::JOB, labels::STEP, labels::OWNER] {
            labels.entry(key.to_string()).or_default();
        }
        let inspect = api(
            "inspecting the prepared container",
            self.docker
                .inspect_container(&self.id, None::<InspectContainerOptions>),
        )
        .await?;
        let image = inspect.image.unwrap_or_default();
        let base = api(
            "inspecting the base image",
            self.docker.inspect_image(&image),
        )
        .await?;
        let base_cfg = base.config.unwrap_or_default();
        // The base image's own settings, so the gate and the job's settings are not baked in.
        let config = bollard::models::ContainerConfig {
            cmd: Some(
                base_cfg
                    .cmd
                    .clone()
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| vec!["sh".into()]),
            ),
            // Never `None`: the engine would fill it in from the container (the gate).
            entrypoint: Some(base_cfg.entrypoint.clone().unwrap_or_default()),
            env: base_cfg.env.clone(),
            user: base_cfg.user.clone(),
            working_dir: base_cfg.working_dir.clone(),
            labels: Some(labels),
            ..Default::default()
        };
        let opts = bollard::query_parameters::CommitContainerOptionsBuilder::default()
            .container(&self.id)
            .repo(repo)
            .tag(tag)
            .comment("cordon environment (prepare)")
            .build();
        let id = api(
            "saving the environment image",
            self.docker.commit_container(opts, config),
        )
        .await?;
        Ok(id.id)
    }

    async fn release(
        &mut self,
        command: &StepCommand,
        mode: GateMode,
        artifacts: &[String],
    ) -> Result<OutputStream, SandboxError> {
        let gate = self.gate.take().ok_or_else(|| {
            SandboxError::Protocol("the sandbox was released twice, or never started".into())
        })?;
        let mode = if mode == GateMode::Send && !self.caps.send {
            GateMode::Hold
        } else {
            mode
        };
        let input = policy::gate_input(&self.nonce, mode, command, artifacts);
        self.write_stdin(&input, mode != GateMode::Hold).await?;
        Ok(Box::pin(
            MarkerFilter::new(gate.into_stream(), self.nonce.clone()).into_stream(),
        ))
    }

    async fn freeze(&mut self) -> Result<(), SandboxError> {
        api(
            "freezing the sandbox",
            self.docker.pause_container(&self.id),
        )
        .await?;
        self.frozen = true;
        Ok(())
    }

    fn download(&self, path: &str) -> ByteStream {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let path = path.to_string();
        self.docker
            .download_from_container(&self.id, Some(opts))
            .map_err(move |e| SandboxError::Engine {
                action: format!("copying {path} out of the sandbox"),
                source: e,
            })
            .boxed()
    }

    async fn finish(&mut self) -> Result<ExitStatus, SandboxError> {
        if self.frozen {
            api(
                "thawing the sandbox",
                self.docker.unpause_container(&self.id),
            )
            .await?;
            self.frozen = false;
        }
        // Let a held gate exit; an error here means it already has.
        let _ = self.write_stdin(b"\n", true).await;
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(&self.id, Some(opts));
        let code = match wait.next().await {
            Some(Ok(r)) => r.status_code,
            // bollard reports a non-zero exit as an error; for cordon it is a result.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(source)) => {
                return Err(SandboxError::Engine {
                    action: "waiting for the sandbox to exit".into(),
                    source,
                });
            }
            None => {
                return Err(SandboxError::Protocol(
                    "the engine ended the wait without a status".into(),
                ));
            }
        };
        let state = api(
            "inspecting the finished sandbox",
            self.docker
                .inspect_container(&self.id, None::<InspectContainerOptions>),
        )
        .await?
        .state
        .unwrap_or_default();
        let code = state.exit_code.unwrap_or(code);
        Ok(ExitStatus {
            code,
            oom_killed: oom_killed(
                &self.docker,
                &self.id,
                self.runsc,
                state.oom_killed.unwrap_or(false),
                code,
            )
            .await,
        })
    }

    async fn kill(&mut self) -> Result<(), SandboxError> {
        let opts = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        // Close the attach connection first: the engine will not finish a container's exit
        // while it is blocked writing output to a client that stopped reading.
        self.stdin = None;
        // The engine's kill waits for the container to exit, and frozen processes cannot die
        // (runc then reports the container stopped while its processes stay frozen): thaw
        // first, and kill at once. The pids limit bounds what runs in between.
        if self.frozen {
            match self.docker.unpause_container(&self.id).await {
                Ok(()) => self.frozen = false,
                Err(e) => debug!(error = %e, "thawing a sandbox being killed"),
            }
        }
        let killed = tokio::time::timeout(
            API_TIMEOUT,
            self.docker.kill_container(&self.id, Some(opts)),
        )
        .await;
        match killed {
            Ok(Ok(())) => {}
            // Not running any more (409) or gone (404): nothing left to kill.
            Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            })) => {}
            Ok(Err(source)) => {
                return Err(SandboxError::Engine {
                    action: "killing the sandbox".into(),
                    source,
                });
            }
            Err(_) => {
                return Err(SandboxError::Engine {
                    action: "killing the sandbox".into(),
                    source: bollard::errors::Error::RequestTimeoutError,
                });
            }
        }
        self.stdin = None;
        Ok(())
    }

    async fn destroy(&mut self) -> Result<(), SandboxError> {
        if self.destroyed {
            return Ok(());
        }
        self.stdin = None;
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match api(
            "removing the sandbox",
            self.docker.remove_container(&self.id, Some(opts)),
        )
        .await
        {
            Ok(()) => {}
            Err(SandboxError::Engine { source, .. }) if is_not_found(&source) => {}
            Err(e) => return Err(e),
        }
        self.destroyed = true;
        Ok(())
    }
}

impl Drop for DockerSandbox {
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        // The runner destroys every sandbox on every path; this is the net under it (a
        // panic, a dropped future). Best effort: the start-up reaper catches the rest.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let id = self.id.clone();
            rt.spawn(async move {
                let opts = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = docker.remove_container(&id, Some(opts)).await;
            });
        }
    }
}

/// How much of the workspace goes to the gate in one frame (one `dd` in the sandbox).
const LOAD_FRAME: usize = 4 << 20;
/// How much of a stream's trailer is held while the other stream's nonce is awaited.
const TRAILER_HELD_MAX: usize = 1 << 20;
/// How much of the gate's stderr is kept for an error message.
const GATE_STDERR_KEPT: usize = 8 << 10;

type RawOutput = Pin<Box<dyn Stream<Item = Result<LogOutput, SandboxError>> + Send>>;

/// A sandbox's output before its command is released: only the gate writes, in lines.
struct GateOutput {
    stream: RawOutput,
    /// Read past the line asked for; given back first.
    pending: VecDeque<LogOutput>,
}

impl GateOutput {
    /// The gate's next line on stdout (without its newline), and what it wrote on stderr
    /// before it (the first few KiB). `doing` names what the gate was asked to do.
    async fn line(&mut self, doing: &str) -> Result<(String, Vec<u8>), SandboxError> {
        let mut line = Vec::new();
        let mut stderr = Vec::new();
        loop {
            let item = match self.pending.pop_front() {
                Some(item) => Some(Ok(item)),
                None => self.stream.next().await,
            };
            match item {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    match message.iter().position(|&b| b == b'\n') {
                        Some(pos) => {
                            line.extend_from_slice(&message[..pos]);
                            let rest = message.slice(pos + 1..);
                            if !rest.is_empty() {
                                self.pending.push_front(LogOutput::StdOut { message: rest });
                            }
                            return Ok((String::from_utf8_lossy(&line).into_owned(), stderr));
                        }
                        None => line.extend_from_slice(&message),
                    }
                    if line.len() > GATE_STDERR_KEPT {
                        return Err(SandboxError::Protocol(format!(
                            "the sandbox's gate wrote an overlong line while asked to {doing}"
                        )));
                    }
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    let room = GATE_STDERR_KEPT.saturating_sub(stderr.len());
                    stderr.extend_from_slice(&message[..message.len().min(room)]);
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(SandboxError::Protocol(format!(
                        "the sandbox ended while its gate was asked to {doing}{}",
                        stderr_note(&stderr)
                    )));
                }
            }
        }
    }

    /// The rest of the output, starting with what was read ahead.
    fn into_stream(self) -> RawOutput {
        futures_util::stream::iter(self.pending.into_iter().map(Ok))
            .chain(self.stream)
            .boxed()
    }
}

/// The error for a workspace (`what`) larger than the sandbox's scratch, whichever way it went in.
fn over_scratch(what: &str) -> String {
    format!("{what} does not fit in the sandbox's scratch: raise limits.scratch or exclude more")
}

/// Writes to a gate's stdin, giving up after [`API_TIMEOUT`] without progress: the image's own
/// tools read it, and an image a `prepare` tampered with may stop reading.
/// The error of a failed workspace load: `failed`, unless the sandbox ran out of memory.
/// The workspace's tmpfs pages count against the job's memory, so a big one can end the
/// sandbox that way: say so rather than leave the user guessing.
async fn load_failed(
    docker: &Docker,
    id: &str,
    runsc: bool,
    what: &str,
    failed: String,
) -> SandboxError {
    let state = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|c| c.state)
        .unwrap_or_default();
    let oom = oom_killed(
        docker,
        id,
        runsc,
        state.oom_killed.unwrap_or(false),
        state.exit_code.unwrap_or(0),
    )
    .await;
    SandboxError::Protocol(if oom {
        format!(
            "{what} does not fit in the job's memory: the sandbox's scratch (workspace included) counts against limits.memory; raise it or exclude more"
        )
    } else {
        failed
    })
}

/// Sends a tar stream to the gate's `load` (see [`policy::GATE`]): the request, the archive in
/// frames of whole 512-byte blocks (the last padded), and the end mark. Stops sending at the
/// archiver's first error (taken from its handle by the caller).
async fn send_framed(
    stdin: &mut Pin<Box<dyn AsyncWrite + Send>>,
    mut tar: impl Stream<Item = std::io::Result<Bytes>> + Unpin,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    write_gate(stdin, policy::LOAD_REQUEST).await?;
    let mut failed = false;
    loop {
        let chunk = tar.next().await;
        match &chunk {
            Some(Ok(data)) => buf.extend_from_slice(data),
            Some(Err(_)) => failed = true,
            None => {}
        }
        let end = !matches!(chunk, Some(Ok(_)));
        if end && !failed && !buf.len().is_multiple_of(512) {
            buf.resize(buf.len().next_multiple_of(512), 0);
        }
        if buf.len() >= LOAD_FRAME || (end && !buf.is_empty()) {
            let data = buf.split_to(buf.len() / 512 * 512);
            if !data.is_empty() {
                write_gate(stdin, &policy::load_frame(&data)).await?;
            }
        }
        if end {
            break;
        }
    }
    write_gate(stdin, policy::LOAD_END).await?;
    stdin.flush().await
}

async fn write_gate(
    stdin: &mut Pin<Box<dyn AsyncWrite + Send>>,
    data: &[u8],
) -> std::io::Result<()> {
    tokio::time::timeout(API_TIMEOUT, stdin.write_all(data))
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the sandbox's gate stopped reading for 2 minutes",
            ))
        })
}

/// `"; it wrote: <stderr>"` for an error message, or nothing.
fn stderr_note(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; it wrote: {text}")
    }
}

/// Splits the gate's nonce out of the output: the gate prints it on stdout and on stderr
/// once the command is done. Each stream is in order, so only when the nonce has been seen on
/// both has everything the command wrote arrived; then comes [`SandboxOutput::CommandDone`].
/// What a stream carries after its nonce is the gate's (the artifacts it sends): it comes
/// after `CommandDone`, as [`SandboxOutput::Trailer`], whichever stream's nonce came first.
/// A stream's tail that could be the start of the nonce is held back until more arrives, so a
/// nonce split across chunks is still found.
struct MarkerFilter<S> {
    inner: S,
    marker: Vec<u8>,
    /// Per stream: held-back bytes and whether its nonce was seen. [stdout, stderr].
    held: [BytesMut; 2],
    found: [bool; 2],
    /// Per stream: what came after its nonce before the other stream's nonce did.
    trailer: [BytesMut; 2],
    done: bool,
}

impl<S> MarkerFilter<S>
where
    S: Stream<Item = Result<bollard::container::LogOutput, SandboxError>> + Send + Unpin + 'static,
{
    fn new(inner: S, nonce: String) -> Self {
        let mut marker = nonce.into_bytes();
        marker.push(b'\n');
        MarkerFilter {
            inner,
            marker,
            held: [BytesMut::new(), BytesMut::new()],
            found: [false, false],
            trailer: [BytesMut::new(), BytesMut::new()],
            done: false,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<SandboxOutput, SandboxError>> + Send {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut me = state?;
            loop {
                let (idx, message) = match me.inner.next().await {
                    Some(Ok(bollard::container::LogOutput::StdErr { message })) => (1, message),
                    Some(Ok(bollard::container::LogOutput::StdOut { message }))
                    | Some(Ok(bollard::container::LogOutput::Console { message })) => (0, message),
                    Some(Ok(bollard::container::LogOutput::StdIn { .. })) => continue,
                    Some(Err(e)) => return Some((Err(e), Some(me))),
                    None => {
                        let mut rest = Vec::new();
                        for (i, stream) in [event::Stream::Stdout, event::Stream::Stderr]
                            .into_iter()
                            .enumerate()
                        {
                            // Without both nonces it was all the job's output.
                            for part in [&mut me.held[i], &mut me.trailer[i]] {
                                if !part.is_empty() {
                                    rest.push(SandboxOutput::Chunk(stream, part.split().freeze()));
                                }
                            }
                        }
                        if rest.is_empty() {
                            return None;
                        }
                        return Some((Ok(rest), None));
                    }
                };
                let out = me.take(idx, message);
                if !out.is_empty() {
                    return Some((Ok(out), Some(me)));
                }
            }
        })
        .flat_map(|item| match item {
            Ok(v) => futures_util::stream::iter(v.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => futures_util::stream::iter(vec![Err(e)]),
        })
    }

    fn take(&mut self, idx: usize, message: Bytes) -> Vec<SandboxOutput> {
        let stream = if idx == 0 {
            event::Stream::Stdout
        } else {
            event::Stream::Stderr
        };
        if self.done {
            return vec![SandboxOutput::Trailer(stream, message)];
        }
        if self.found[idx] {
            let trailer = &mut self.trailer[idx];
            trailer.extend_from_slice(&message);
            // Waiting for the other stream's nonce holds a little; past that it is output
            // (counted against the job's cap), not a place for a forger to park data.
            if trailer.len() > TRAILER_HELD_MAX {
                return vec![SandboxOutput::Chunk(stream, trailer.split().freeze())];
            }
            return vec![];
        }
        let held = &mut self.held[idx];
        held.extend_from_slice(&message);
        let mut out = Vec::new();
        if let Some(pos) = find(held, &self.marker) {
            let before = held.split_to(pos).freeze();
            let _ = held.split_to(self.marker.len());
            let after = held.split();
            if !before.is_empty() {
                out.push(SandboxOutput::Chunk(stream, before));
            }
            self.found[idx] = true;
            if after.len() > TRAILER_HELD_MAX {
                out.push(SandboxOutput::Chunk(stream, after.freeze()));
            } else {
                self.trailer[idx] = after;
            }
            if self.found == [true, true] {
                self.done = true;
                out.push(SandboxOutput::CommandDone);
                for (i, s) in [event::Stream::Stdout, event::Stream::Stderr]
                    .into_iter()
                    .enumerate()
                {
                    if !self.trailer[i].is_empty() {
                        out.push(SandboxOutput::Trailer(s, self.trailer[i].split().freeze()));
                    }
                }
            }
            return out;
        }
        // Hold back only a tail that could be the start of the nonce, so ordinary output
        // (a progress line, a prompt) is passed on at once.
        let keep = (1..self.marker.len().min(held.len() + 1))
            .rev()
            .find(|&n| held.ends_with(&self.marker[..n]))
            .unwrap_or(0);
        let emit = held.len() - keep;
        if emit > 0 {
            out.push(SandboxOutput::Chunk(stream, held.split_to(emit).freeze()));
        }
        out
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::container::LogOutput;

    async fn run(chunks: Vec<LogOutput>) -> (Vec<u8>, Vec<u8>, bool) {
        let (out, err, done, trailer) = run_all(chunks).await;
        assert_eq!(trailer, [Vec::<u8>::new(), Vec::new()]);
        (out, err, done)
    }

    /// Job output (stdout, stderr), done, and the gate's trailer [stdout, stderr].
    async fn run_all(chunks: Vec<LogOutput>) -> (Vec<u8>, Vec<u8>, bool, [Vec<u8>; 2]) {
        let s = futures_util::stream::iter(chunks.into_iter().map(Ok));
        let mut f = Box::pin(MarkerFilter::new(s, "NONCE".into()).into_stream());
        let (mut out, mut err, mut done) = (Vec::new(), Vec::new(), false);
        let mut trailer = [Vec::new(), Vec::new()];
        while let Some(item) = f.next().await {
            match item.expect("no error") {
                SandboxOutput::Chunk(stream, b) => {
                    assert!(!done, "job output after done");
                    match stream {
                        event::Stream::Stdout => out.extend_from_slice(&b),
                        event::Stream::Stderr => err.extend_from_slice(&b),
                    }
                }
                SandboxOutput::CommandDone => done = true,
                SandboxOutput::Trailer(stream, b) => {
                    assert!(done, "trailer before done");
                    trailer[stream as usize].extend_from_slice(&b);
                }
            }
        }
        (out, err, done, trailer)
    }

    #[tokio::test]
    async fn what_follows_the_nonces_is_the_gates_and_comes_after_done() {
        let (out, err, done, trailer) = run_all(vec![
            o("job\nNONCE\ntar "),
            o("bytes"),
            e("job err\nNON"),
            e("CE\ntar: warning"),
            o(" more"),
        ])
        .await;
        assert!(done);
        assert_eq!(out, b"job\n");
        assert_eq!(err, b"job err\n");
        assert_eq!(trailer[0], b"tar bytes more");
        assert_eq!(trailer[1], b"tar: warning");
    }

    fn e(s: &str) -> LogOutput {
        LogOutput::StdErr {
            message: Bytes::copy_from_slice(s.as_bytes()),
        }
    }

    fn o(s: &str) -> LogOutput {
        LogOutput::StdOut {
            message: Bytes::copy_from_slice(s.as_bytes()),
        }
    }

    #[tokio::test]
    async fn done_needs_the_marker_on_both_streams_even_split_across_chunks() {
        let (out, err, done) = run(vec![
            e("warning: x\nNO"),
            e("NC"),
            e("E\n"),
            o("tail of stdout\nNONCE\n"),
        ])
        .await;
        assert!(done);
        assert_eq!(err, b"warning: x\n");
        assert_eq!(out, b"tail of stdout\n");
    }

    #[tokio::test]
    async fn the_marker_on_one_stream_only_is_not_done() {
        let (out, err, done) = run(vec![e("NONCE\n"), o("still writing\n")]).await;
        assert!(
            !done,
            "stdout's marker has not arrived: its data may still be in flight"
        );
        assert_eq!(out, b"still writing\n");
        assert_eq!(err, b"");
    }

    #[tokio::test]
    async fn ordinary_output_is_not_held_back() {
        let s = futures_util::stream::iter(vec![Ok(o("ready\n"))])
            .chain(futures_util::stream::pending());
        let mut f = Box::pin(MarkerFilter::new(s, "NONCE".into()).into_stream());
        match tokio::time::timeout(std::time::Duration::from_secs(1), f.next()).await {
            Ok(Some(Ok(SandboxOutput::Chunk(event::Stream::Stdout, b)))) => {
                assert_eq!(&b[..], b"ready\n")
            }
            other => panic!("`ready` was held back: {other:?}"),
        }
    }

    #[tokio::test]
    async fn output_without_a_marker_is_passed_through_whole() {
        let (out, err, done) = run(vec![o("hello\n"), e("NON"), e("CX")]).await;
        assert!(!done);
        assert_eq!(out, b"hello\n");
        assert_eq!(err, b"NONCX");
    }

    #[tokio::test]
    async fn a_partial_line_before_the_marker_is_kept() {
        let (out, err, done) = run(vec![e("no newline at endNONCE\n"), o("NONCE\n")]).await;
        assert!(done);
        assert_eq!(err, b"no newline at end");
        assert_eq!(out, b"");
    }
}
