//! The strict seccomp profile (`sandbox-profiles/seccomp-strict.json`) refuses what it must and
//! allows what Python, pytest and a shell need. No Docker needed: this reads the file.

use serde_json::Value;

const ENOSYS: u64 = 38;
const CLONE_NAMESPACE_FLAGS: u64 = 2_114_060_288;
const AF_VSOCK: u64 = 40;

/// Syscalls no rule may allow unconditionally.
const DENIED: &[&str] = &[
    // keyring
    "add_key",
    "keyctl",
    "request_key",
    // kernel attack surface
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // mounts
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    // namespaces
    "unshare",
    "setns",
    "clone",
    "clone3",
    // other processes
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    // file handles
    "name_to_handle_at",
    "open_by_handle_at",
    // argument-restricted
    "personality",
    "socket",
    // the machine
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "iopl",
    "ioperm",
    "vhangup",
];

/// Syscalls a Python test run cannot do without.
const NEEDED: &[&str] = &[
    "read",
    "write",
    "execve",
    "exit_group",
    "futex",
    "openat",
    "mmap",
    "wait4",
    "close",
    "rt_sigaction",
    "epoll_wait",
    "pipe2",
    "getrandom",
    "rseq",
];

fn profile() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sandbox-profiles/seccomp-strict.json"
    );
    let text = std::fs::read_to_string(path).expect("read sandbox-profiles/seccomp-strict.json");
    serde_json::from_str(&text).expect("seccomp-strict.json is valid JSON")
}

fn rules(p: &Value) -> &Vec<Value> {
    p["syscalls"].as_array().expect("syscalls is an array")
}

fn names(rule: &Value) -> Vec<&str> {
    rule["names"]
        .as_array()
        .expect("names is an array")
        .iter()
        .map(|n| n.as_str().expect("a name is a string"))
        .collect()
}

fn has_args(rule: &Value) -> bool {
    rule.get("args")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

fn is_allow(rule: &Value) -> bool {
    rule["action"] == "SCMP_ACT_ALLOW"
}

fn rules_for<'a>(p: &'a Value, name: &str) -> Vec<&'a Value> {
    rules(p)
        .iter()
        .filter(|r| names(r).contains(&name))
        .collect()
}

fn allowed_unconditionally(p: &Value, name: &str) -> bool {
    rules_for(p, name)
        .iter()
        .any(|r| is_allow(r) && !has_args(r) && r.get("includes").is_none())
}

#[test]
fn default_action_refuses_with_an_errno() {
    let p = profile();
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    let errno = p["defaultErrnoRet"].as_u64().expect("defaultErrnoRet");
    assert_eq!(errno, 1, "refused syscalls fail with EPERM");
    let arches: Vec<&str> = p["archMap"]
        .as_array()
        .expect("archMap")
        .iter()
        .map(|a| a["architecture"].as_str().expect("architecture"))
        .collect();
    assert!(arches.contains(&"SCMP_ARCH_X86_64"));
    assert!(arches.contains(&"SCMP_ARCH_AARCH64"));
}

#[test]
fn only_known_actions_and_well_formed_rules() {
    let p = profile();
    for rule in rules(&p) {
        let action = rule["action"].as_str().expect("action is a string");
        assert!(
            matches!(action, "SCMP_ACT_ALLOW" | "SCMP_ACT_ERRNO"),
            "unexpected action {action}"
        );
        assert!(!names(rule).is_empty());
        for arg in rule
            .get("args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert!(arg["index"].as_u64().is_some_and(|i| i < 6), "{arg}");
            assert!(arg["value"].as_u64().is_some(), "{arg}");
            assert!(
                arg["op"]
                    .as_str()
                    .is_some_and(|op| op.starts_with("SCMP_CMP_")),
                "{arg}"
            );
        }
    }
}

#[test]
fn the_big_allow_list_is_sorted_and_free_of_duplicates() {
    let p = profile();
    for rule in rules(&p).iter().filter(|r| names(r).len() > 1) {
        let n = names(rule);
        let mut sorted = n.clone();
        sorted.sort_by_key(|s| s.trim_start_matches('_'));
        assert_eq!(n, sorted, "names are sorted");
        sorted.dedup();
        assert_eq!(n.len(), sorted.len(), "no duplicate names");
    }
}

#[test]
fn denied_syscalls_are_never_allowed_unconditionally() {
    let p = profile();
    for name in DENIED {
        assert!(
            !allowed_unconditionally(&p, name),
            "{name} must not be in an SCMP_ACT_ALLOW rule without args"
        );
    }
    // These have no argument-restricted form at all.
    for name in DENIED
        .iter()
        .filter(|n| !matches!(**n, "clone" | "personality" | "socket"))
    {
        assert!(
            rules_for(&p, name).iter().all(|r| !is_allow(r)),
            "{name} must not be allowed in any form"
        );
    }
}

#[test]
fn clone_is_allowed_only_without_namespace_flags() {
    let p = profile();
    let clone_rules = rules_for(&p, "clone");
    assert!(!clone_rules.is_empty(), "clone (threads, fork) is allowed");
    for rule in clone_rules {
        assert!(is_allow(rule));
        assert_eq!(names(rule), vec!["clone"], "clone has its own rule");
        let args = rule["args"]
            .as_array()
            .expect("clone is argument-restricted");
        assert_eq!(args.len(), 1);
        let arg = &args[0];
        assert_eq!(arg["index"], 0);
        assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(arg["value"].as_u64(), Some(CLONE_NAMESPACE_FLAGS));
        assert_eq!(arg.get("valueTwo").and_then(Value::as_u64).unwrap_or(0), 0);
    }
}

#[test]
fn clone3_fails_with_enosys() {
    let p = profile();
    let clone3 = rules_for(&p, "clone3");
    assert_eq!(clone3.len(), 1);
    assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
    assert_eq!(clone3[0]["errnoRet"].as_u64(), Some(ENOSYS));
    assert!(!has_args(clone3[0]));
}

#[test]
fn socket_refuses_vsock() {
    let p = profile();
    let socket_rules = rules_for(&p, "socket");
    assert!(
        !socket_rules.is_empty(),
        "sockets (AF_UNIX, loopback) are allowed"
    );
    for rule in socket_rules.iter().filter(|r| is_allow(r)) {
        let args = rule["args"]
            .as_array()
            .expect("socket is argument-restricted");
        // Each rule is a single exact match on the family (an allow-list): `!=` tests are
        // bypassable with high bits the kernel truncates, and several tests on one argument
        // are OR-ed by runc.
        assert_eq!(args.len(), 1, "{rule}");
        assert_eq!(args[0]["index"], 0);
        assert_eq!(args[0]["op"], "SCMP_CMP_EQ");
        assert_ne!(args[0]["value"].as_u64(), Some(AF_VSOCK));
    }
    let families: Vec<u64> = socket_rules
        .iter()
        .filter_map(|r| r["args"][0]["value"].as_u64())
        .collect();
    for needed in [1, 2, 10] {
        assert!(families.contains(&needed), "family {needed} allowed");
    }
}

#[test]
fn personality_allows_only_harmless_values() {
    let p = profile();
    const ADDR_NO_RANDOMIZE: u64 = 0x0040000;
    for rule in rules_for(&p, "personality") {
        let args = rule["args"]
            .as_array()
            .expect("personality is argument-restricted");
        assert_eq!(args.len(), 1);
        assert_eq!(args[0]["op"], "SCMP_CMP_EQ");
        let value = args[0]["value"].as_u64().expect("value");
        assert!(
            value == 0xFFFF_FFFF || value & ADDR_NO_RANDOMIZE == 0,
            "{value:#x}"
        );
    }
}

#[test]
fn what_python_needs_is_allowed() {
    let p = profile();
    for name in NEEDED {
        assert!(allowed_unconditionally(&p, name), "{name} must be allowed");
    }
    assert!(
        rules_for(&p, "clone").iter().any(|r| is_allow(r)),
        "clone must be allowed (threads, fork)"
    );
}
