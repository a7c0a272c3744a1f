//! A [`SandboxPlan`] in the Docker engine's terms, and the check that the engine recorded
//! it: the only place cordon's settings become Docker's.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, HostConfigLogConfig, MountType,
    ResourcesUlimits,
};

use crate::sandbox::egress::ProxyConfig;
use crate::sandbox::labels;
use crate::sandbox::plan::{Mount, NetworkAccess, NetworkPlan, SandboxPlan, Tmpfs};

/// A plan's labels with the engine's owner label (`hostname:pid`, for reaping).
pub(crate) fn with_owner(plan: &BTreeMap<String, String>, owner: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = plan.clone().into_iter().collect();
    labels.insert(labels::OWNER.to_string(), owner.to_string());
    labels
}

/// A tmpfs mount's options.
fn tmpfs_options(t: &Tmpfs) -> String {
    format!(
        "rw,nosuid,nodev,size={},uid={},gid={},mode={}",
        t.size_bytes, t.uid, t.gid, t.mode
    )
}

/// A tmpfs volume's `o` option (the local driver's `mount -o`).
pub(crate) fn volume_options(t: &Tmpfs) -> String {
    format!(
        "size={},uid={},gid={},mode={},nosuid,nodev",
        t.size_bytes, t.uid, t.gid, t.mode
    )
}

/// The container a plan describes, labelled with `owner`.
pub(crate) fn container_body(plan: &SandboxPlan, owner: &str) -> ContainerCreateBody {
    let mut tmpfs = HashMap::new();
    let mut mounts = Vec::new();
    for m in &plan.mounts {
        match m {
            Mount::Tmpfs { target, tmpfs: t } => {
                tmpfs.insert(target.clone(), tmpfs_options(t));
            }
            Mount::Volume { target, volume } => mounts.push(bollard::models::Mount {
                target: Some(target.clone()),
                source: Some(volume.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                ..Default::default()
            }),
            Mount::Bind { target, source } => mounts.push(bollard::models::Mount {
                target: Some(target.clone()),
                source: Some(source.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            }),
        }
    }
    let sec = &plan.security;
    let mut security_opt = Vec::new();
    if sec.no_new_privileges {
        security_opt.push("no-new-privileges:true".to_string());
    }
    security_opt.push(format!("seccomp={}", sec.seccomp));
    let (network_mode, dns) = match &plan.network {
        NetworkAccess::None => ("none".to_string(), None),
        NetworkAccess::Default => ("bridge".to_string(), None),
        NetworkAccess::Internal { network, dns } => (network.clone(), Some(dns.clone())),
    };
    let l = &plan.limits;
    let host_config = HostConfig {
        // Memory: a hard limit and no swap on top of it.
        memory: Some(l.memory_bytes as i64),
        memory_swap: Some(l.memory_bytes as i64),
        nano_cpus: Some(l.nano_cpus),
        pids_limit: Some(l.pids),
        ulimits: Some(vec![
            ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(l.nofile),
                hard: Some(l.nofile),
            },
            ResourcesUlimits {
                name: Some("core".into()),
                soft: Some(l.core_bytes as i64),
                hard: Some(l.core_bytes as i64),
            },
        ]),
        oom_kill_disable: Some(false),
        // Identity and privilege.
        cap_drop: Some(sec.cap_drop.clone()),
        cap_add: Some(sec.cap_add.clone()),
        security_opt: Some(security_opt),
        privileged: Some(sec.privileged),
        // Filesystem.
        readonly_rootfs: Some(sec.read_only_root),
        tmpfs: Some(tmpfs),
        mounts: Some(mounts),
        shm_size: Some(l.shm_bytes as i64),
        // Network and namespaces.
        network_mode: Some(network_mode),
        dns_search: dns.as_ref().map(|_| vec![]),
        dns_options: dns.as_ref().map(|_| vec![]),
        dns,
        ipc_mode: Some("private".into()),
        init: Some(sec.init),
        runtime: plan.runtime.clone(),
        // Output is streamed to cordon only: the engine keeps no log file a flood could fill.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        auto_remove: Some(false),
        publish_all_ports: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(plan.image.clone()),
        entrypoint: Some(plan.command.clone()),
        // The step's command and environment arrive over stdin (see `policy::GATE`).
        cmd: Some(vec![]),
        user: Some(format!("{}:{}", plan.user.uid, plan.user.gid)),
        working_dir: Some(plan.workdir.clone()),
        env: Some(plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(with_owner(&plan.labels, owner)),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        network_disabled: Some(plan.network == NetworkAccess::None),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The egress proxy's sidecar container (see `sandbox::sidecar`): cordon's own program,
/// run as nobody with every capability dropped, a read-only root and small limits, on the
/// engine's default bridge (its way out); the job's internal network is connected after
/// creation. Its settings are the operator's; nothing of the submitter's is in them but the
/// allowlist, which is within the operator's.
pub(crate) fn egress_proxy_body(
    network: &NetworkPlan,
    image: &str,
    owner: &str,
    proxy: &ProxyConfig,
) -> ContainerCreateBody {
    let host_config = HostConfig {
        memory: Some(256 << 20),
        memory_swap: Some(256 << 20),
        nano_cpus: Some(1_000_000_000),
        pids_limit: Some(128),
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("nofile".into()),
            soft: Some(1024),
            hard: Some(1024),
        }]),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(vec![]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        privileged: Some(false),
        readonly_rootfs: Some(true),
        network_mode: Some("bridge".into()),
        ipc_mode: Some("private".into()),
        init: Some(false),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([("max-size".into(), "1m".into())])),
        }),
        auto_remove: Some(false),
        publish_all_ports: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(crate::sandbox::sidecar::command(proxy)),
        user: Some("65534:65534".into()),
        env: Some(vec![]),
        labels: Some(crate::sandbox::sidecar::labels(with_owner(
            &network.labels,
            owner,
        ))),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Every setting of `asked` that the engine did not record as asked, as `field: wanted X,
/// engine has Y`. Empty means the sandbox is what the profile says.
pub(crate) fn verify(asked: &ContainerCreateBody, got: &ContainerInspectResponse) -> Vec<String> {
    let mut wrong = Vec::new();
    let (Some(a), Some(g)) = (asked.host_config.as_ref(), got.host_config.as_ref()) else {
        return vec!["the engine returned no host config".into()];
    };
    fn check<T: PartialEq + std::fmt::Debug>(
        wrong: &mut Vec<String>,
        what: &str,
        a: &Option<T>,
        g: &Option<T>,
    ) {
        if a.is_some() && a != g {
            wrong.push(format!("{what}: wanted {a:?}, engine has {g:?}"));
        }
    }
    check(&mut wrong, "memory", &a.memory, &g.memory);
    check(&mut wrong, "memory_swap", &a.memory_swap, &g.memory_swap);
    check(&mut wrong, "nano_cpus", &a.nano_cpus, &g.nano_cpus);
    check(&mut wrong, "pids_limit", &a.pids_limit, &g.pids_limit);
    check(
        &mut wrong,
        "readonly_rootfs",
        &a.readonly_rootfs,
        &g.readonly_rootfs,
    );
    check(&mut wrong, "network_mode", &a.network_mode, &g.network_mode);
    check(&mut wrong, "init", &a.init, &g.init);
    check(&mut wrong, "runtime", &a.runtime, &g.runtime);
    check(&mut wrong, "privileged", &a.privileged, &g.privileged);
    let caps = |v: &Option<Vec<String>>| {
        let mut v: Vec<String> = v
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.trim_start_matches("CAP_").to_ascii_uppercase())
            .collect();
        v.sort();
        v
    };
    if caps(&a.cap_drop) != caps(&g.cap_drop) {
        wrong.push(format!(
            "cap_drop: wanted {:?}, engine has {:?}",
            a.cap_drop, g.cap_drop
        ));
    }
    if !caps(&g.cap_add).is_empty() && caps(&a.cap_add) != caps(&g.cap_add) {
        wrong.push(format!(
            "cap_add: wanted {:?}, engine has {:?}",
            a.cap_add, g.cap_add
        ));
    }
    // The seccomp filter and no-new-privileges must be recorded exactly as sent: the very
    // filter of the profile (not another, not `unconfined`, not two), the flag set.
    let sec_asked = a.security_opt.clone().unwrap_or_default();
    let sec_got = g.security_opt.clone().unwrap_or_default();
    let key = |s: &str| s.split(['=', ':']).next().unwrap_or_default().to_string();
    let with_key = |v: &[String], k: &str| {
        let mut v: Vec<String> = v.iter().filter(|s| key(s) == k).cloned().collect();
        v.sort();
        v
    };
    let shown = |v: &[String]| {
        if v.is_empty() {
            return "none".to_string();
        }
        v.iter()
            .map(|s| match s.split_once('=') {
                Some(("seccomp", json)) if json.len() > 40 => {
                    use sha2::Digest as _;
                    let digest = sha2::Sha256::digest(json.as_bytes());
                    format!(
                        "seccomp=<{} bytes, sha256 {}>",
                        json.len(),
                        &hex::encode(digest)[..12]
                    )
                }
                _ => s.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for k in ["seccomp", "no-new-privileges"] {
        let (want, have) = (with_key(&sec_asked, k), with_key(&sec_got, k));
        if want != have {
            wrong.push(format!(
                "security_opt `{k}`: wanted {}, engine has {}",
                shown(&want),
                shown(&have)
            ));
        }
    }
    for want in &sec_asked {
        let k = key(want);
        if k != "seccomp" && k != "no-new-privileges" && !sec_got.contains(want) {
            wrong.push(format!("security_opt: `{want}` is missing"));
        }
    }
    let ulimit = |v: &Option<Vec<ResourcesUlimits>>, n: &str| {
        v.as_ref()
            .and_then(|u| u.iter().find(|x| x.name.as_deref() == Some(n)))
            .map(|x| (x.soft, x.hard))
    };
    if ulimit(&a.ulimits, "nofile") != ulimit(&g.ulimits, "nofile") {
        wrong.push("ulimits.nofile: not recorded as asked".into());
    }
    if a.tmpfs != g.tmpfs {
        wrong.push(format!(
            "tmpfs: wanted {:?}, engine has {:?}",
            a.tmpfs, g.tmpfs
        ));
    }
    let user = got.config.as_ref().and_then(|c| c.user.clone());
    if user != asked.user {
        wrong.push(format!(
            "user: wanted {:?}, engine has {user:?}",
            asked.user
        ));
    }
    wrong
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Scratch;
    use crate::sandbox::policy::tests::{gvisor_job, job};
    use crate::sandbox::policy::{
        RUNSC_PIDS_BASE, RUNSC_PIDS_PER_PROCESS, prepare_plan, step_plan, warm_key,
    };
    use crate::spec::Job;

    /// A step's container as the Docker backend creates it.
    fn container_config(
        job: &Job,
        step: usize,
        image: &str,
        scratch: &Scratch,
        owner: &str,
    ) -> ContainerCreateBody {
        container_body(&step_plan(job, step, image, scratch), owner)
    }

    /// The whole attack surface of a strict sandbox, reviewed as one snapshot.
    #[test]
    fn strict_container_config_snapshot() {
        let job = job();
        let scratch = Scratch {
            volumes: vec![
                ("cordon-job-000000000000-ws".into(), "/workspace".into()),
                ("cordon-job-000000000000-out".into(), "/out".into()),
            ],
        };
        let mut cfg = container_config(&job, 0, "sha256:image", &scratch, "host:1");
        // The seccomp JSON is long and has its own test; show only that it is there.
        if let Some(h) = cfg.host_config.as_mut() {
            h.security_opt = h.security_opt.take().map(|v| {
                v.into_iter()
                    .map(|s| {
                        if s.starts_with("seccomp=") {
                            "seccomp=<sandbox-profiles/seccomp-strict.json>".into()
                        } else {
                            s
                        }
                    })
                    .collect()
            });
        }
        insta::with_settings!({ sort_maps => true }, {
            insta::assert_yaml_snapshot!(cfg);
        });
    }

    /// Steps under runsc get the runtime and a pids limit that leaves room for gVisor's own
    /// threads; the prepare runs under runc with the job's pids limit as it is.
    #[test]
    fn gvisor_steps_run_under_runsc_and_its_prepare_under_runc() {
        let job = gvisor_job();
        let step = container_config(&job, 0, "img", &Scratch::default(), "h:1");
        let h = step.host_config.as_ref().expect("host config");
        assert_eq!(h.runtime.as_deref(), Some("runsc"));
        assert_eq!(
            h.pids_limit,
            Some(RUNSC_PIDS_BASE + 32 * RUNSC_PIDS_PER_PROCESS)
        );
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        let prep = container_body(&prepare_plan(&job, "img").sandbox, "h:1");
        let h = prep.host_config.as_ref().expect("host config");
        assert_eq!(h.runtime.as_deref(), Some("runc"));
        assert_eq!(h.pids_limit, Some(32));
        assert_eq!(
            h.network_mode.as_deref(),
            Some("cordon-job-000000000000-egress")
        );
        // Everything else of the step's settings is strict's: only runtime and pids differ.
        let strict = {
            let mut j = job.clone();
            j.profile = crate::spec::profile::builtin_strict().expect("strict");
            container_config(&j, 0, "img", &Scratch::default(), "h:1")
        };
        let mut step = step;
        if let Some(h) = step.host_config.as_mut() {
            h.runtime = None;
            h.pids_limit = Some(32);
        }
        assert_eq!(
            serde_json::to_value(&step).expect("json"),
            serde_json::to_value(&strict).expect("json")
        );
        // And the pool never hands a runc sandbox to a runsc job.
        assert_ne!(warm_key(&job, "img"), {
            let mut j = job.clone();
            j.profile = crate::spec::profile::builtin_strict().expect("strict");
            warm_key(&j, "img")
        });
    }

    /// What an engine that applied every setting of `asked` would report.
    fn recorded_as_asked(asked: &ContainerCreateBody) -> ContainerInspectResponse {
        ContainerInspectResponse {
            host_config: asked.host_config.clone(),
            config: Some(bollard::models::ContainerConfig {
                user: asked.user.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn verify_spots_a_runtime_the_engine_did_not_record() {
        let job = gvisor_job();
        let asked = container_config(&job, 0, "img", &Scratch::default(), "h:1");
        let mut got = recorded_as_asked(&asked);
        assert!(verify(&asked, &got).is_empty());
        if let Some(h) = got.host_config.as_mut() {
            h.runtime = Some("runc".into());
        }
        let wrong = verify(&asked, &got);
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(
            wrong[0].starts_with("runtime: wanted Some(\"runsc\")"),
            "{wrong:?}"
        );
    }

    #[test]
    fn verify_spots_a_limit_the_engine_dropped() {
        let job = job();
        let asked = container_config(&job, 0, "img", &Scratch::default(), "h:1");
        let mut got = recorded_as_asked(&asked);
        assert!(verify(&asked, &got).is_empty());
        if let Some(h) = got.host_config.as_mut() {
            h.memory_swap = Some(-1);
            h.pids_limit = None;
        }
        let wrong = verify(&asked, &got);
        assert_eq!(wrong.len(), 2, "{wrong:?}");
        assert!(wrong[0].starts_with("memory_swap"));
        assert!(wrong[1].starts_with("pids_limit"));
    }

    /// The engine must record the profile's very seccomp filter and no-new-privileges: a
    /// different filter, `unconfined`, a second filter or a missing flag is a mismatch.
    #[test]
    fn verify_spots_a_seccomp_filter_or_flag_the_engine_did_not_apply() {
        let job = job();
        let asked = container_config(&job, 0, "img", &Scratch::default(), "h:1");
        let sec = asked
            .host_config
            .as_ref()
            .and_then(|h| h.security_opt.clone())
            .expect("security_opt");
        let filter = format!("seccomp={}", job.profile.seccomp_json);
        assert!(sec.contains(&filter), "cordon sends the filter itself");
        assert!(sec.contains(&"no-new-privileges:true".to_string()));
        let got_with = |opts: Vec<String>| ContainerInspectResponse {
            host_config: asked.host_config.clone().map(|h| HostConfig {
                security_opt: Some(opts),
                ..h
            }),
            config: Some(bollard::models::ContainerConfig {
                user: asked.user.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        // As asked, in another order: fine.
        let mut reversed = sec.clone();
        reversed.reverse();
        assert!(verify(&asked, &got_with(reversed)).is_empty());

        let nnp = "no-new-privileges:true".to_string();
        let other = filter.replace("SCMP_ACT_ERRNO", "SCMP_ACT_LOG");
        assert_ne!(other, filter);
        for (opts, want) in [
            (
                vec![nnp.clone(), other.clone()],
                "security_opt `seccomp`: wanted seccomp=<",
            ),
            (
                vec![nnp.clone(), "seccomp=unconfined".into()],
                "engine has seccomp=unconfined",
            ),
            (vec![nnp.clone()], "engine has none"),
            (
                vec![nnp.clone(), filter.clone(), other],
                "security_opt `seccomp`",
            ),
            (
                vec![filter.clone()],
                "security_opt `no-new-privileges`: wanted no-new-privileges:true, engine has none",
            ),
            (
                vec![filter.clone(), "no-new-privileges:false".into()],
                "engine has no-new-privileges:false",
            ),
        ] {
            let wrong = verify(&asked, &got_with(opts.clone()));
            assert_eq!(wrong.len(), 1, "{wrong:?}");
            assert!(wrong[0].contains(want), "{wrong:?} lacks {want:?}");
            assert!(wrong[0].len() < 300, "the filter is summarised: {wrong:?}");
        }
    }
}
