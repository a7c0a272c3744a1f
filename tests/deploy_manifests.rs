//! The deployment files, checked without a cluster or an engine:
//!
//! - every document of `deploy/kubernetes.yaml` round-trips through the Kubernetes API's typed
//!   structs (`k8s-openapi`) without losing a field: a misspelt or misplaced key, or a value
//!   of the wrong type, fails here instead of being dropped by the API server;
//! - cordon's own invariants: no privileged or host-namespace pod, the Docker socket mounted
//!   into the controller container and nowhere else, the token and the store's URL from
//!   Secrets, a grace period covering `shutdown_grace`, a PodDisruptionBudget, probes on
//!   routes the service serves;
//! - the ConfigMap's `cordon.yaml` and `deploy/cordon.yaml` through cordon's config parser
//!   (unknown keys are refused), and the systemd unit's stop timeout against the latter.
//!
//! Each check is a function returning what it found wrong, and the mutation tests at the end
//! show each one refusing a manifest broken on purpose.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cordon::server::ServerConfig;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::Value;

const MANIFEST: &str = "deploy/kubernetes.yaml";
const CONFIG_EXAMPLE: &str = "deploy/cordon.yaml";
const UNIT: &str = "deploy/cordon.service";

/// What a controller needs after `shutdown_grace` runs out: cancel what still runs, remove
/// its containers, write the results.
const STOP_MARGIN: Duration = Duration::from_secs(30);

/// How long `/readyz` waits for the engine before answering 503.
const READY_ENGINE_WAIT_SECS: i32 = 5;

/// The controller container's name; the only one that may mount the Docker socket.
const CONTROLLER: &str = "cordon";

/// Where engines put their socket; a hostPath of either directory would expose it too.
const SOCKET_PATHS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// The documents of a multi-document YAML file, as JSON values (what the API server sees).
fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| {
            let v: serde_yaml_ng::Value =
                serde::Deserialize::deserialize(doc).expect("a YAML document");
            serde_json::to_value(v).expect("YAML that is also JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The typed manifest: every document parsed into its kind's struct.
#[derive(Default, Clone)]
struct Manifest {
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    pdbs: Vec<PodDisruptionBudget>,
    services: Vec<Service>,
    network_policies: Vec<NetworkPolicy>,
}

/// Where `typed` (the round-tripped document) differs from `raw`: fields lost, changed or
/// added, as JSON paths.
fn differences(raw: &Value, typed: &Value, at: &str, out: &mut Vec<String>) {
    match (raw, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let here = format!("{at}.{k}");
                match b.get(k) {
                    Some(vb) => differences(va, vb, &here, out),
                    None => out.push(format!("{here}: dropped (not a field of this kind here)")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{at}.{k}: added by the round trip"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                differences(va, vb, &format!("{at}[{i}]"), out);
            }
        }
        _ if raw == typed => {}
        _ => out.push(format!("{at}: {raw} became {typed}")),
    }
}

fn round_trip<T>(raw: &Value, what: &str, problems: &mut Vec<String>) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = match serde_json::from_value(raw.clone()) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{what}: not a valid {what}: {e}"));
            return None;
        }
    };
    let back = serde_json::to_value(&typed).expect("serializing a typed object");
    let mut diffs = Vec::new();
    differences(raw, &back, "", &mut diffs);
    problems.extend(diffs.into_iter().map(|d| format!("{what} {d}")));
    Some(typed)
}

/// Parses every document into its kind's struct; any kind cordon does not deploy, any
/// document the struct refuses or loses a field of, is a problem.
fn typed(docs: &[Value]) -> (Manifest, Vec<String>) {
    let mut m = Manifest::default();
    let mut problems = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let api = doc["apiVersion"].as_str().unwrap_or("");
        let kind = doc["kind"].as_str().unwrap_or("");
        let name = doc["metadata"]["name"].as_str().unwrap_or("?");
        let what = format!("document {i} ({api} {kind} {name})");
        match (api, kind) {
            ("v1", "ConfigMap") => m.config_maps.extend(round_trip(doc, &what, &mut problems)),
            ("apps/v1", "Deployment") => {
                m.deployments.extend(round_trip(doc, &what, &mut problems))
            }
            ("policy/v1", "PodDisruptionBudget") => {
                m.pdbs.extend(round_trip(doc, &what, &mut problems))
            }
            ("v1", "Service") => m.services.extend(round_trip(doc, &what, &mut problems)),
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                m.network_policies
                    .extend(round_trip(doc, &what, &mut problems))
            }
            _ => problems.push(format!(
                "{what}: not a kind this test knows; add it to `typed` with its struct"
            )),
        }
    }
    (m, problems)
}

/// The ConfigMap's `cordon.yaml` through cordon's parser (unknown keys refused), then the
/// container's literal `CORDON_*` environment applied on top as the service would.
fn parse_config(text: &str, origin: &str) -> Result<ServerConfig, String> {
    no_store_or_id_in_file(text, origin)?;
    let mut config: ServerConfig =
        cordon::spec::parse_yaml(text, Path::new(origin)).map_err(|e| e.to_string())?;
    if config.token.is_some() {
        return Err(format!(
            "{origin}: `token` is a literal secret; use token_file (a Secret's mount)"
        ));
    }
    if config.tokens.iter().any(|t| t.token.is_some()) {
        return Err(format!(
            "{origin}: a `tokens` entry has a literal secret; use token_file"
        ));
    }
    config
        .apply_env(|_| None)
        .map_err(|e| format!("{origin}: {e}"))?;
    Ok(config)
}

/// `store` (a URL with a password) and `controller_id` (one per pod) must come from the
/// environment — `CORDON_STORE` from a Secret, `CORDON_CONTROLLER_ID` from the pod's name —
/// never from a file every controller shares.
fn no_store_or_id_in_file(text: &str, origin: &str) -> Result<(), String> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    for key in ["store", "controller_id"] {
        if doc.get(key).is_some() {
            return Err(format!(
                "{origin}: `{key}` is written in the file; it comes from the environment \
                 (CORDON_STORE from a Secret, CORDON_CONTROLLER_ID from the pod's name)"
            ));
        }
    }
    Ok(())
}

fn the_deployment(m: &Manifest) -> Result<&Deployment, String> {
    match m.deployments.as_slice() {
        [d] => Ok(d),
        other => Err(format!(
            "expected exactly one Deployment (the controllers), found {}",
            other.len()
        )),
    }
}

fn pod_spec(d: &Deployment) -> Result<&PodSpec, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| "the Deployment has no pod template spec".to_string())
}

fn all_containers(p: &PodSpec) -> impl Iterator<Item = &Container> {
    p.containers
        .iter()
        .chain(p.init_containers.iter().flatten())
}

fn controller(p: &PodSpec) -> Result<&Container, String> {
    p.containers
        .iter()
        .find(|c| c.name == CONTROLLER)
        .ok_or_else(|| format!("no container named `{CONTROLLER}`"))
}

/// The ConfigMap key `cordon.yaml` of the ConfigMap the controller's config comes from.
fn controller_config(m: &Manifest) -> Result<ServerConfig, String> {
    let p = pod_spec(the_deployment(m)?)?;
    let c = controller(p)?;
    let args = c.args.clone().unwrap_or_default();
    let path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .ok_or("the controller is not started with --config FILE")?;
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| vm.mount_path == path)
        .ok_or(format!("nothing is mounted at the config path {path}"))?;
    let volume = p
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .ok_or(format!("no volume `{}`", mount.name))?;
    let cm_name = volume
        .config_map
        .as_ref()
        .map(|c| c.name.clone())
        .ok_or(format!(
            "the config volume `{}` is not a ConfigMap",
            volume.name
        ))?;
    let key = mount
        .sub_path
        .clone()
        .ok_or("the config is not mounted by subPath")?;
    let cm = m
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(&cm_name))
        .ok_or(format!("the ConfigMap `{cm_name}` is not in the manifest"))?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .ok_or(format!("ConfigMap `{cm_name}` has no key `{key}`"))?;
    let mut config = parse_config(text, &format!("ConfigMap {cm_name}/{key}"))?;
    // The container's literal CORDON_* values override the file, as in the service.
    let literal: Vec<(String, String)> = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    config
        .apply_env(|k| literal.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .map_err(|e| format!("the controller's environment: {e}"))?;
    Ok(config)
}

/// No privileged pod, no host namespaces, every container locked down, non-root.
fn check_pod_security(m: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    let p = match the_deployment(m).and_then(pod_spec) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    for (flag, set) in [
        ("hostNetwork", p.host_network),
        ("hostPID", p.host_pid),
        ("hostIPC", p.host_ipc),
    ] {
        if set == Some(true) {
            problems.push(format!("the pod sets {flag}"));
        }
    }
    if p.automount_service_account_token != Some(false) {
        problems.push("the pod mounts a service account token it never uses".into());
    }
    let pod_sc = p.security_context.clone().unwrap_or_default();
    if p.share_process_namespace == Some(true) {
        problems.push("the pod shares one process namespace between its containers".into());
    }
    match controller(p) {
        Ok(c) if c.image.as_deref() == Some(cordon::image::CONTROLLER_IMAGE) => {}
        Ok(c) => problems.push(format!(
            "the controller runs {:?}, not the image `cordon image build controller` makes ({})",
            c.image,
            cordon::image::CONTROLLER_IMAGE
        )),
        Err(e) => problems.push(e),
    }
    for c in all_containers(p) {
        let sc = c.security_context.clone().unwrap_or_default();
        let name = &c.name;
        if sc.privileged == Some(true) {
            problems.push(format!("container `{name}` is privileged"));
        }
        if sc.allow_privilege_escalation != Some(false) {
            problems.push(format!(
                "container `{name}` does not set allowPrivilegeEscalation: false"
            ));
        }
        if sc.read_only_root_filesystem != Some(true) {
            problems.push(format!("container `{name}` has a writable root filesystem"));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            problems.push(format!("container `{name}` does not drop ALL capabilities"));
        }
        if caps.add.iter().flatten().next().is_some() {
            problems.push(format!("container `{name}` adds capabilities"));
        }
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true);
        let uid = sc.run_as_user.or(pod_sc.run_as_user);
        if !non_root || uid == Some(0) {
            problems.push(format!("container `{name}` may run as root"));
        }
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .or(pod_sc.seccomp_profile.as_ref())
            .map(|s| s.type_.as_str());
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            problems.push(format!(
                "container `{name}` runs without a seccomp profile ({seccomp:?})"
            ));
        }
        if c.image_pull_policy.as_deref() != Some("Never") {
            problems.push(format!(
                "container `{name}`: there is no registry; imagePullPolicy must be Never"
            ));
        }
    }
    problems
}

/// The Docker socket: a hostPath of the socket itself (nothing wider), mounted into the
/// controller container only. (A readOnly mount would not help: connect(2) on a socket is
/// not refused by a read-only mount, so no other container may mount it at all.)
fn check_socket(m: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    let p = match the_deployment(m).and_then(pod_spec) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    let mut socket_volumes = BTreeSet::new();
    for v in p.volumes.iter().flatten() {
        let Some(hp) = &v.host_path else { continue };
        if SOCKET_PATHS.contains(&hp.path.as_str()) && hp.type_.as_deref() == Some("Socket") {
            socket_volumes.insert(v.name.clone());
        } else {
            problems.push(format!(
                "volume `{}` mounts the host's {} (type {:?}): only the Docker socket itself may come from the host",
                v.name, hp.path, hp.type_
            ));
        }
    }
    if socket_volumes.len() != 1 {
        problems.push(format!(
            "expected one hostPath volume of the Docker socket, found {}",
            socket_volumes.len()
        ));
    }
    for c in all_containers(p) {
        for vm in c.volume_mounts.iter().flatten() {
            if socket_volumes.contains(&vm.name) && c.name != CONTROLLER {
                problems.push(format!(
                    "container `{}` mounts the Docker socket (root-equivalent on the node)",
                    c.name
                ));
            }
        }
    }
    match controller(p) {
        Ok(c) => {
            let mounted: Vec<_> = c
                .volume_mounts
                .iter()
                .flatten()
                .filter(|vm| socket_volumes.contains(&vm.name))
                .collect();
            if mounted.len() != 1 {
                problems.push("the controller container does not mount the socket".into());
            }
            for vm in mounted {
                if !SOCKET_PATHS.contains(&vm.mount_path.as_str()) {
                    problems.push(format!(
                        "the socket is mounted at {}, where DOCKER_HOST does not point",
                        vm.mount_path
                    ));
                }
            }
        }
        Err(e) => problems.push(e),
    }
    problems
}

/// The admin token and the store's URL come from Secrets; nothing that looks like a secret is
/// written in the manifest; the controller id is the pod's name.
fn check_secrets(m: &Manifest, raw: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let p = match the_deployment(m).and_then(pod_spec) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    let Ok(c) = controller(p) else {
        return vec!["no controller container".into()];
    };
    let env = |name: &str| c.env.iter().flatten().find(|e| e.name == name);
    for name in ["CORDON_TOKEN", "CORDON_STORE"] {
        if let Some(e) = env(name)
            && e.value.is_some()
        {
            problems.push(format!("{name} is a literal value; take it from a Secret"));
        }
    }
    match env("CORDON_STORE").and_then(|e| e.value_from.as_ref()) {
        Some(from) if from.secret_key_ref.is_some() => {}
        _ => problems.push("CORDON_STORE does not come from a Secret (secretKeyRef)".into()),
    }
    match env("CORDON_CONTROLLER_ID")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|f| f.field_ref.as_ref())
    {
        Some(f) if f.field_path == "metadata.name" => {}
        _ => problems.push("CORDON_CONTROLLER_ID is not the pod's name (fieldRef)".into()),
    }
    if raw.contains("postgres://") || raw.contains("postgresql://") {
        // The header's kubectl example is the one place allowed to show the URL's shape.
        for (i, line) in raw.lines().enumerate() {
            let l = line.trim_start();
            if (l.contains("postgres://") || l.contains("postgresql://")) && !l.starts_with('#') {
                problems.push(format!(
                    "line {}: a PostgreSQL URL written in the manifest",
                    i + 1
                ));
            }
        }
    }
    // The token: a file inside a Secret's mount (or CORDON_TOKEN from a Secret).
    let token_from_env = env("CORDON_TOKEN")
        .and_then(|e| e.value_from.as_ref())
        .is_some_and(|f| f.secret_key_ref.is_some());
    match controller_config(m) {
        Ok(config) => {
            // A file is a Secret's when a Secret volume is mounted at a directory above it.
            let in_secret = |tf: &std::path::PathBuf| {
                c.volume_mounts.iter().flatten().any(|vm| {
                    tf.starts_with(&vm.mount_path)
                        && p.volumes
                            .iter()
                            .flatten()
                            .any(|v| v.name == vm.name && v.secret.is_some())
                })
            };
            if !(config.token_file.as_ref().is_some_and(in_secret) || token_from_env) {
                problems.push(
                    "the admin token is neither a file in a Secret's mount nor CORDON_TOKEN from a Secret"
                        .into(),
                );
            }
            for t in &config.tokens {
                if !t.token_file.as_ref().is_some_and(in_secret) {
                    problems.push(format!(
                        "token `{}` is not a file in a Secret's mount",
                        t.name
                    ));
                }
            }
        }
        Err(e) => problems.push(e),
    }
    problems
}

/// terminationGracePeriodSeconds covers shutdown_grace plus [`STOP_MARGIN`].
fn check_grace(m: &Manifest) -> Vec<String> {
    let p = match the_deployment(m).and_then(pod_spec) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    let config = match controller_config(m) {
        Ok(c) => c,
        Err(e) => return vec![e],
    };
    // Kubernetes' default when unset.
    let grace = Duration::from_secs(p.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
    let needed = config.shutdown_grace.0 + STOP_MARGIN;
    if grace < needed {
        vec![format!(
            "terminationGracePeriodSeconds {}s is less than shutdown_grace {}s + {}s margin",
            grace.as_secs(),
            config.shutdown_grace.0.as_secs(),
            STOP_MARGIN.as_secs()
        )]
    } else {
        Vec::new()
    }
}

fn selects(
    selector: Option<&std::collections::BTreeMap<String, String>>,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    match (selector, labels) {
        (Some(s), Some(l)) if !s.is_empty() => s.iter().all(|(k, v)| l.get(k) == Some(v)),
        _ => false,
    }
}

/// A PodDisruptionBudget and a Service that select the controllers; probes on real routes
/// and on the port the service listens on.
fn check_pdb_service_probes(m: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    let d = match the_deployment(m) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    let labels = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|md| md.labels.as_ref());
    let pdb_ok = m.pdbs.iter().any(|pdb| {
        pdb.spec.as_ref().is_some_and(|s| {
            (s.max_unavailable.is_some() || s.min_available.is_some())
                && selects(
                    s.selector
                        .as_ref()
                        .and_then(|sel| sel.match_labels.as_ref()),
                    labels,
                )
        })
    });
    if !pdb_ok {
        problems.push("no PodDisruptionBudget (with a budget) selects the controllers".into());
    }
    if !m
        .services
        .iter()
        .any(|s| selects(s.spec.as_ref().and_then(|s| s.selector.as_ref()), labels))
    {
        problems.push("no Service selects the controllers".into());
    }
    let Ok(c) = pod_spec(d).and_then(controller) else {
        problems.push("no controller container".into());
        return problems;
    };
    let listen_port = match controller_config(m).and_then(|cfg| {
        cfg.listen_addr()
            .map(|a| a.port())
            .map_err(|e| e.to_string())
    }) {
        Ok(port) => Some(port),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let port_of = |p: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString| match p {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => Some(*n),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .map(|cp| cp.container_port),
    };
    for (what, probe, route) in [
        ("readinessProbe", &c.readiness_probe, "/readyz"),
        ("livenessProbe", &c.liveness_probe, "/healthz"),
    ] {
        let Some(get) = probe.as_ref().and_then(|p| p.http_get.as_ref()) else {
            problems.push(format!("the controller has no HTTP {what}"));
            continue;
        };
        // /readyz waits up to 5s for the engine (server::queue::Service::ready); a shorter
        // probe timeout (Kubernetes' default is 1s) takes a slow engine for a dead pod.
        let timeout = probe.as_ref().and_then(|p| p.timeout_seconds).unwrap_or(1);
        if route == "/readyz" && timeout <= READY_ENGINE_WAIT_SECS {
            problems.push(format!(
                "{what} times out after {timeout}s; /readyz may take {READY_ENGINE_WAIT_SECS}s"
            ));
        }
        let path = get.path.as_deref().unwrap_or("/");
        if path != route {
            problems.push(format!("{what} asks {path}; it should ask {route}"));
        }
        if !cordon::server::api::ROUTES
            .iter()
            .any(|(method, p)| *method == "get" && *p == path)
        {
            problems.push(format!("{what}: the service has no route GET {path}"));
        }
        let port = port_of(&get.port);
        if port.is_none() || port.map(|p| p as i64) != listen_port.map(i64::from) {
            problems.push(format!(
                "{what} asks port {:?}, the service listens on {listen_port:?}",
                get.port
            ));
        }
    }
    problems
}

fn manifest() -> (Manifest, String) {
    let raw = read(MANIFEST);
    let (m, problems) = typed(&documents(&raw));
    assert!(problems.is_empty(), "{MANIFEST}:\n{}", problems.join("\n"));
    (m, raw)
}

fn all_checks(m: &Manifest, raw: &str) -> Vec<String> {
    let mut p = check_pod_security(m);
    p.extend(check_socket(m));
    p.extend(check_secrets(m, raw));
    p.extend(check_grace(m));
    p.extend(check_pdb_service_probes(m));
    p
}

#[test]
fn every_document_round_trips_through_the_api_types() {
    let raw = read(MANIFEST);
    let docs = documents(&raw);
    assert!(
        docs.len() >= 4,
        "{MANIFEST} has only {} documents",
        docs.len()
    );
    let (_, problems) = typed(&docs);
    assert!(problems.is_empty(), "{MANIFEST}:\n{}", problems.join("\n"));
}

#[test]
fn the_manifest_keeps_cordons_invariants() {
    let (m, raw) = manifest();
    let problems = all_checks(&m, &raw);
    assert!(problems.is_empty(), "{MANIFEST}:\n{}", problems.join("\n"));
}

#[test]
fn the_configmap_and_the_example_config_parse_with_cordons_parser() {
    let (m, _) = manifest();
    let config = controller_config(&m).expect("the ConfigMap's cordon.yaml");
    // What the pod needs of it: reachable from other pods, a data dir inside the emptyDir
    // that cordon creates itself (it must own it to make it 0700).
    assert!(
        config.listen_addr().expect("listen").ip().is_unspecified(),
        "the controller must listen beyond the pod's loopback for the Service"
    );
    assert!(config.data_dir.starts_with("/var/lib/cordon/"));

    let example = parse_config(&read(CONFIG_EXAMPLE), CONFIG_EXAMPLE).expect(CONFIG_EXAMPLE);
    assert_eq!(example.data_dir, Path::new("/var/lib/cordon"));
}

/// The systemd unit gives a stopping controller shutdown_grace plus the margin before
/// SIGKILL, with the example configuration it is installed with.
#[test]
fn the_systemd_unit_waits_long_enough_on_stop() {
    let unit = read(UNIT);
    let config = parse_config(&read(CONFIG_EXAMPLE), CONFIG_EXAMPLE).expect(CONFIG_EXAMPLE);
    let timeout = unit
        .lines()
        .find_map(|l| l.trim().strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec in the unit");
    let timeout = humantime::parse_duration(timeout)
        .or_else(|_| timeout.parse::<u64>().map(Duration::from_secs))
        .expect("a TimeoutStopSec systemd reads");
    assert!(
        timeout >= config.shutdown_grace.0 + STOP_MARGIN,
        "TimeoutStopSec {timeout:?} < shutdown_grace {:?} + {STOP_MARGIN:?}",
        config.shutdown_grace.0
    );
    assert!(
        unit.contains("\nKillMode=mixed\n"),
        "SIGTERM to cordon only, SIGKILL to all at the end"
    );
}

// ---- the checks refuse what they are for: each mutation must be caught ----

fn mutated(edit: impl Fn(&mut Vec<Value>)) -> Vec<String> {
    let raw = read(MANIFEST);
    let mut docs = documents(&raw);
    edit(&mut docs);
    let (m, mut problems) = typed(&docs);
    let text = docs
        .iter()
        .map(|d| serde_yaml_ng::to_string(d).expect("yaml"))
        .collect::<Vec<_>>()
        .join("---\n");
    problems.extend(all_checks(&m, &text));
    problems
}

fn deployment(docs: &mut [Value]) -> &mut Value {
    docs.iter_mut()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment")
}

fn pod(docs: &mut [Value]) -> &mut Value {
    &mut deployment(docs)["spec"]["template"]["spec"]
}

fn assert_caught(problems: &[String], what: &str) {
    assert!(
        problems.iter().any(|p| p.contains(what)),
        "expected a problem mentioning {what:?}, got {problems:#?}"
    );
}

#[test]
fn a_misspelt_or_misplaced_key_is_caught() {
    // A probe under a misspelt name would be dropped by the API server: no probe at all.
    let p = mutated(|d| {
        let c = &mut pod(d)["containers"][0];
        let probe = c.as_object_mut().unwrap().remove("readinessProbe").unwrap();
        c["readinesProbe"] = probe;
    });
    assert_caught(&p, "readinesProbe: dropped");
    // runAsNonRoot one level too high (on the Deployment's spec).
    let p = mutated(|d| deployment(d)["spec"]["runAsNonRoot"] = true.into());
    assert_caught(&p, ".spec.runAsNonRoot: dropped");
    // A number where the API wants a string map.
    let p = mutated(|d| pod(d)["nodeSelector"]["cordon.dev/docker"] = true.into());
    assert_caught(&p, "not a valid");
    // A kind nobody checks.
    let p = mutated(|d| {
        d.push(serde_json::json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"}}))
    });
    assert_caught(&p, "not a kind this test knows");
}

#[test]
fn a_privileged_or_host_namespace_pod_is_caught() {
    let p = mutated(|d| pod(d)["containers"][0]["securityContext"]["privileged"] = true.into());
    assert_caught(&p, "is privileged");
    for flag in ["hostNetwork", "hostPID", "hostIPC"] {
        let p = mutated(|d| pod(d)[flag] = true.into());
        assert_caught(&p, &format!("sets {flag}"));
    }
    let p = mutated(|d| {
        pod(d)["securityContext"]["seccompProfile"] = serde_json::json!({"type": "Unconfined"})
    });
    assert_caught(&p, "without a seccomp profile");
    let p = mutated(|d| pod(d)["containers"][0]["image"] = "cordon/controller:latest".into());
    assert_caught(&p, "not the image `cordon image build controller` makes");
    let p = mutated(|d| pod(d)["securityContext"]["runAsNonRoot"] = false.into());
    assert_caught(&p, "may run as root");
    let p = mutated(|d| {
        pod(d)["containers"][0]["securityContext"]["capabilities"]["add"] =
            serde_json::json!(["SYS_ADMIN"])
    });
    assert_caught(&p, "adds capabilities");
    let p = mutated(|d| {
        pod(d)["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = false.into()
    });
    assert_caught(&p, "writable root filesystem");
}

#[test]
fn the_socket_anywhere_but_the_controller_is_caught() {
    // A second container (an innocent-looking log shipper) that mounts the socket read-only.
    let p = mutated(|d| {
        let mut other = pod(d)["containers"][0].clone();
        other["name"] = "shipper".into();
        other["volumeMounts"] = serde_json::json!([
            {"name": "docker-sock", "mountPath": "/var/run/docker.sock", "readOnly": true}
        ]);
        pod(d)["containers"].as_array_mut().unwrap().push(other);
    });
    assert_caught(&p, "container `shipper` mounts the Docker socket");
    // The socket's directory instead of the socket.
    let p = mutated(|d| {
        for v in pod(d)["volumes"].as_array_mut().unwrap() {
            if v["name"] == "docker-sock" {
                v["hostPath"] = serde_json::json!({"path": "/var/run", "type": "Directory"});
            }
        }
    });
    assert_caught(&p, "only the Docker socket itself");
}

#[test]
fn literal_secrets_are_caught() {
    let p = mutated(|d| {
        for e in pod(d)["containers"][0]["env"].as_array_mut().unwrap() {
            if e["name"] == "CORDON_STORE" {
                *e = serde_json::json!({"name": "CORDON_STORE", "value": "postgres://u:p@db:5432/c"});
            }
        }
    });
    assert_caught(&p, "CORDON_STORE is a literal value");
    assert_caught(&p, "a PostgreSQL URL written in the manifest");
    let p = mutated(|d| {
        let cm = d.iter_mut().find(|d| d["kind"] == "ConfigMap").unwrap();
        let text = cm["data"]["cordon.yaml"].as_str().unwrap().to_string();
        cm["data"]["cordon.yaml"] = text
            .replace(
                "token_file: /var/run/secrets/cordon/token",
                "token: 0123456789abcdef0123",
            )
            .into();
    });
    assert_caught(&p, "literal secret");
    // A token file that is not in a Secret's mount (the writable emptyDir).
    let p = mutated(|d| {
        let cm = d.iter_mut().find(|d| d["kind"] == "ConfigMap").unwrap();
        let text = cm["data"]["cordon.yaml"].as_str().unwrap().to_string();
        cm["data"]["cordon.yaml"] = text
            .replace("/var/run/secrets/cordon/token", "/var/lib/cordon/token")
            .into();
    });
    assert_caught(&p, "neither a file in a Secret's mount");
    // A named token read from the ConfigMap's mount.
    let p = mutated(|d| {
        let cm = d.iter_mut().find(|d| d["kind"] == "ConfigMap").unwrap();
        let text = cm["data"]["cordon.yaml"].as_str().unwrap().to_string();
        cm["data"]["cordon.yaml"] = text
            .replace(
                "token_file: /var/run/secrets/cordon/token\n",
                "token_file: /var/run/secrets/cordon/token\ntokens: [{ name: ci, token_file: /etc/cordon/sandbox-profiles/ci }]\n",
            )
            .into();
    });
    assert_caught(&p, "token `ci` is not a file in a Secret's mount");
    let p = mutated(|d| {
        let cm = d.iter_mut().find(|d| d["kind"] == "ConfigMap").unwrap();
        let text = cm["data"]["cordon.yaml"].as_str().unwrap().to_string();
        cm["data"]["cordon.yaml"] = format!("{text}store: postgres://u:p@db/c\n").into();
    });
    assert_caught(&p, "`store` is written in the file");
}

#[test]
fn a_misspelt_config_key_or_a_short_grace_is_caught() {
    let p = mutated(|d| {
        let cm = d.iter_mut().find(|d| d["kind"] == "ConfigMap").unwrap();
        let text = cm["data"]["cordon.yaml"].as_str().unwrap().to_string();
        cm["data"]["cordon.yaml"] = text.replace("shutdown_grace:", "shutdown_grase:").into();
    });
    assert_caught(&p, "shutdown_grase");
    let p = mutated(|d| {
        let cm = d.iter_mut().find(|d| d["kind"] == "ConfigMap").unwrap();
        let text = cm["data"]["cordon.yaml"].as_str().unwrap().to_string();
        cm["data"]["cordon.yaml"] = text.replace("lease: 15s", "lease: soon").into();
    });
    assert_caught(&p, "`lease`");
    let p = mutated(|d| pod(d)["terminationGracePeriodSeconds"] = 45.into());
    assert_caught(&p, "terminationGracePeriodSeconds 45s");
    // The environment overrides the file, and the check sees it.
    let p = mutated(|d| {
        pod(d)["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "CORDON_SHUTDOWN_GRACE", "value": "5m"}))
    });
    assert_caught(&p, "terminationGracePeriodSeconds");
}

#[test]
fn a_missing_budget_or_a_wrong_probe_is_caught() {
    let p = mutated(|d| d.retain(|doc| doc["kind"] != "PodDisruptionBudget"));
    assert_caught(&p, "no PodDisruptionBudget");
    let p =
        mutated(|d| pod(d)["containers"][0]["livenessProbe"]["httpGet"]["path"] = "/health".into());
    assert_caught(&p, "no route GET /health");
    let p = mutated(|d| pod(d)["containers"][0]["readinessProbe"]["httpGet"]["port"] = 8080.into());
    assert_caught(&p, "readinessProbe asks port");
    let p = mutated(|d| {
        let probe = &mut pod(d)["containers"][0]["readinessProbe"];
        probe.as_object_mut().unwrap().remove("timeoutSeconds");
    });
    assert_caught(&p, "readinessProbe times out after 1s");
    let p = mutated(|d| {
        for doc in d.iter_mut().filter(|d| d["kind"] == "PodDisruptionBudget") {
            doc["spec"]["selector"]["matchLabels"] = serde_json::json!({"app": "other"});
        }
    });
    assert_caught(&p, "no PodDisruptionBudget");
}
