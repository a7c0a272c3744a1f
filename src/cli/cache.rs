//! `cordon cache ls|prune`: the dependency environments made by `prepare`.

use std::time::{Duration, SystemTime};

use clap::Subcommand;

use super::{EXIT_INVALID, EXIT_SANDBOX_ERROR, report_error};
use crate::envcache::{self, PrunePolicy};
use crate::sandbox::docker::DockerBackend;
use crate::spec::Size;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List cached environments, most recently used first: key, size, age, last use, and
    /// what each was built from.
    #[command(
        after_help = "Exit status: 0 listed (also when there are none), 5 the engine failed."
    )]
    Ls {
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove environments: unused for longer than --older-than, then the least recently
    /// used until the rest fit in --max-size. An environment a running job uses is kept.
    #[command(
        after_help = "Exit status: 0 done (also when nothing was removed), 2 a bad --max-size or none of\n--older-than, --max-size, --all, 5 the engine failed."
    )]
    Prune {
        /// e.g. 7d, 12h.
        #[arg(long, value_name = "AGE")]
        older_than: Option<humantime::Duration>,
        /// e.g. 10GiB.
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Remove every cached environment.
        #[arg(long)]
        all: bool,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn cache(cmd: CacheCommand) -> u8 {
    let backend = match DockerBackend::connect().await {
        Ok(b) => b,
        Err(e) => {
            report_error(&e);
            return EXIT_SANDBOX_ERROR;
        }
    };
    let docker = backend.client();
    match cmd {
        CacheCommand::Ls { json } => match envcache::list(docker).await {
            Ok(entries) => {
                if json {
                    match serde_json::to_string(&entries) {
                        Ok(s) => println!("{s}"),
                        Err(e) => {
                            eprintln!("cordon: {}: {e}", super::error_word());
                            return EXIT_SANDBOX_ERROR;
                        }
                    }
                    return 0;
                }
                if entries.is_empty() {
                    eprintln!("cordon: no cached environments (a job with `prepare:` makes one)");
                    return 0;
                }
                println!(
                    "{:<16}  {:>9}  {:>9}  {:>9}  {:<20}  BUILT FROM",
                    "KEY", "SIZE", "AGE", "LAST USE", "BASE"
                );
                let now = SystemTime::now();
                for e in &entries {
                    println!(
                        "{:<16}  {:>9}  {:>9}  {:>9}  {:<20}  {} [{}]",
                        &e.key[..16.min(e.key.len())],
                        Size(e.size_bytes).to_string(),
                        ago(now, e.created),
                        ago(now, e.last_used),
                        e.base,
                        e.command.lines().next().unwrap_or_default(),
                        e.files.join(", ")
                    );
                }
                let total: u64 = entries.iter().map(|e| e.size_bytes).sum();
                eprintln!(
                    "cordon: {} environments, {} in all",
                    entries.len(),
                    Size(total)
                );
                0
            }
            Err(e) => {
                report_error(&e);
                EXIT_SANDBOX_ERROR
            }
        },
        CacheCommand::Prune {
            older_than,
            max_size,
            all,
            dry_run,
        } => {
            let max_total_bytes = match max_size.as_deref().map(str::parse::<Size>) {
                None => None,
                Some(Ok(s)) => Some(s.bytes()),
                Some(Err(e)) => {
                    eprintln!("cordon: {}: --max-size: {e}", super::error_word());
                    return EXIT_INVALID;
                }
            };
            if older_than.is_none() && max_total_bytes.is_none() && !all {
                eprintln!(
                    "cordon: {}: say what to prune: --older-than AGE, --max-size SIZE or --all",
                    super::error_word()
                );
                return EXIT_INVALID;
            }
            let policy = PrunePolicy {
                older_than: older_than.map(Into::into),
                max_total_bytes,
                all,
            };
            let result = if dry_run {
                envcache::list(docker)
                    .await
                    .map(|entries| envcache::choose(&entries, &policy, SystemTime::now()))
            } else {
                envcache::prune(docker, &policy).await
            };
            match result {
                Ok(removed) => {
                    for e in &removed {
                        println!(
                            "{}  {}",
                            if dry_run { "would remove" } else { "removed" },
                            e.reference
                        );
                    }
                    let freed: u64 = removed.iter().map(|e| e.size_bytes).sum();
                    eprintln!(
                        "cordon: {} {} environment(s), {}",
                        if dry_run { "would remove" } else { "removed" },
                        removed.len(),
                        Size(freed)
                    );
                    0
                }
                Err(e) => {
                    report_error(&e);
                    EXIT_SANDBOX_ERROR
                }
            }
        }
    }
}

fn ago(now: SystemTime, then: SystemTime) -> String {
    let d = now.duration_since(then).unwrap_or(Duration::ZERO).as_secs();
    match d {
        0..=59 => format!("{d}s"),
        60..=3599 => format!("{}m", d / 60),
        3600..=86399 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86400),
    }
}
