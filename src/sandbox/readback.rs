//! The sandbox as the engine recorded it: an inspected container turned into the
//! engine-neutral [`AppliedSandbox`] that a job's events carry (and its web page shows).

use bollard::models::{ContainerInspectResponse, HostConfig, MountPoint};

use crate::event::AppliedSandbox;

/// What `got` (the engine's inspection of a sandbox container) says the sandbox is.
pub(crate) fn applied(got: &ContainerInspectResponse) -> AppliedSandbox {
    let host = got.host_config.clone().unwrap_or_default();
    let security = host.security_opt.clone().unwrap_or_default();
    AppliedSandbox {
        runtime: host.runtime.clone().unwrap_or_else(|| "runc".into()),
        user: got
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "the image's user".into()),
        read_only_rootfs: host.readonly_rootfs.unwrap_or(false),
        cap_drop: caps(&host.cap_drop),
        cap_add: caps(&host.cap_add),
        no_new_privileges: security.iter().any(|s| {
            matches!(
                s.as_str(),
                "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
            )
        }),
        seccomp: seccomp(&security),
        network: host
            .network_mode
            .clone()
            .unwrap_or_else(|| "default".into()),
        memory_bytes: host.memory.filter(|&m| m > 0),
        memory_swap_bytes: host.memory_swap.filter(|&m| m != 0),
        cpus: host.nano_cpus.filter(|&n| n > 0).map(|n| n as f64 / 1e9),
        pids: host.pids_limit.filter(|&p| p > 0),
        nofile: host
            .ulimits
            .as_ref()
            .and_then(|u| u.iter().find(|x| x.name.as_deref() == Some("nofile")))
            .and_then(|x| x.soft),
        mounts: mounts(&host, got.mounts.as_deref().unwrap_or_default()),
    }
}

fn caps(v: &Option<Vec<String>>) -> Vec<String> {
    let mut v: Vec<String> = v
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_uppercase())
        .collect();
    v.sort();
    v
}

/// `unconfined`, `engine default` (no filter named), or cordon's own filter summarised.
fn seccomp(security: &[String]) -> String {
    let Some(value) = security
        .iter()
        .find_map(|s| s.strip_prefix("seccomp=").or(s.strip_prefix("seccomp:")))
    else {
        return "engine default".into();
    };
    if value == "unconfined" {
        return "unconfined".into();
    }
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(value.as_bytes()));
    let rules = serde_json::from_str::<serde_json::Value>(value)
        .ok()
        .and_then(|v| v.get("syscalls").and_then(|s| s.as_array()).map(Vec::len));
    match rules {
        Some(n) => format!("custom: {n} rules, sha256 {}", &digest[..12]),
        None => format!("custom: sha256 {}", &digest[..12]),
    }
}

/// Volumes and binds as the engine mounted them, then the tmpfs mounts, sorted by target.
fn mounts(host: &HostConfig, mounted: &[MountPoint]) -> Vec<String> {
    let mut out: Vec<String> = mounted
        .iter()
        .map(|m| {
            let kind = m
                .typ
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "mount".into());
            let mode = if m.rw.unwrap_or(false) { "rw" } else { "ro" };
            format!(
                "{} ({kind}, {mode})",
                m.destination.as_deref().unwrap_or("?")
            )
        })
        .collect();
    for (target, options) in host.tmpfs.iter().flatten() {
        let mode = if options.split(',').any(|o| o == "ro") {
            "ro"
        } else {
            "rw"
        };
        let rest: Vec<&str> = options
            .split(',')
            .filter(|o| !o.is_empty() && *o != "ro" && *o != "rw")
            .collect();
        if rest.is_empty() {
            out.push(format!("{target} (tmpfs, {mode})"));
        } else {
            out.push(format!("{target} (tmpfs, {mode}, {})", rest.join(",")));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, ResourcesUlimits};

    fn inspected() -> ContainerInspectResponse {
        ContainerInspectResponse {
            config: Some(ContainerConfig {
                user: Some("65534:65534".into()),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                runtime: Some("runsc".into()),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec![
                    "no-new-privileges".into(),
                    r#"seccomp={"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"]},{"names":["write"]}]}"#.into(),
                ]),
                network_mode: Some("none".into()),
                memory: Some(512 << 20),
                memory_swap: Some(512 << 20),
                nano_cpus: Some(1_500_000_000),
                pids_limit: Some(128),
                ulimits: Some(vec![ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(1024),
                    hard: Some(1024),
                }]),
                tmpfs: Some(
                    [("/tmp".to_string(), "rw,nosuid,size=64m".to_string())]
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            }),
            mounts: Some(vec![MountPoint {
                typ: Some("volume".into()),
                destination: Some("/workspace".into()),
                rw: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn reads_every_setting_back_from_the_inspection() {
        let a = applied(&inspected());
        assert_eq!(a.runtime, "runsc");
        assert_eq!(a.user, "65534:65534");
        assert!(a.read_only_rootfs);
        assert_eq!(a.cap_drop, ["ALL"]);
        assert!(a.cap_add.is_empty());
        assert!(a.no_new_privileges);
        assert!(
            a.seccomp.starts_with("custom: 2 rules, sha256 "),
            "{}",
            a.seccomp
        );
        assert_eq!(a.network, "none");
        assert_eq!(a.memory_bytes, Some(512 << 20));
        assert_eq!(a.cpus, Some(1.5));
        assert_eq!(a.pids, Some(128));
        assert_eq!(a.nofile, Some(1024));
        assert_eq!(
            a.mounts,
            [
                "/tmp (tmpfs, rw, nosuid,size=64m)",
                "/workspace (volume, rw)"
            ]
        );
    }

    #[test]
    fn an_unset_limit_or_filter_is_shown_as_such() {
        let mut got = inspected();
        let host = got.host_config.as_mut().expect("host config");
        host.security_opt = Some(vec!["seccomp=unconfined".into()]);
        host.memory = Some(0);
        host.pids_limit = Some(-1);
        host.runtime = None;
        let a = applied(&got);
        assert_eq!(a.seccomp, "unconfined");
        assert!(!a.no_new_privileges);
        assert_eq!(a.memory_bytes, None);
        assert_eq!(a.pids, None);
        assert_eq!(a.runtime, "runc");
        got.host_config.as_mut().expect("host config").security_opt = None;
        assert_eq!(applied(&got).seccomp, "engine default");
    }
}
