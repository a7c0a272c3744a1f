//! A submitted spec as YAML text: `cordon::spec::parse_yaml` into a `JobSpec`, then
//! `cordon::spec::validate` under the service's rules, and the service's own entry point,
//! `cordon::server::upload::prepare`, on the same text. Neither may panic, and they must
//! agree on whether a spec without a workspace is acceptable.
#![no_main]

use std::path::Path;

use cordon::spec::{self, JobSpec};
use libfuzzer_sys::fuzz_target;

#[path = "common/spec.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fx = common::fixture();

    let direct = match spec::parse_yaml::<JobSpec>(text, Path::new("spec")) {
        Err(_) => None,
        Ok(parsed) => {
            let no_workspace = parsed.workspace.is_none();
            common::as_submitted(parsed, fx).map(|s| {
                let r = common::validate(s, fx);
                if let Ok(job) = &r {
                    common::check_job(job);
                }
                (no_workspace, r.is_ok())
            })
        }
    };

    // The service's path: no upload, no workspace roots, profiles from the fixture. A
    // refused spec has its job dir removed: keep that inside the fixture.
    let job_dir = fx.base.join("jobs").join("job-fuzz");
    let served = cordon::server::upload::prepare(&fx.config, "job-fuzz", text, None, &job_dir);
    if let Ok((job, _)) = &served {
        common::check_job(job);
    }
    if let Some((true, ok)) = direct {
        assert_eq!(
            ok,
            served.is_ok(),
            "validate and upload::prepare disagree: {:?}",
            served.err()
        );
    }
});
