//! `cordon image build|ls`.

use clap::Subcommand;

use super::progress::{Mode, Progress};
use super::{EXIT_INVALID, EXIT_SANDBOX_ERROR, report_error, term};
use crate::image::{self, BuildOptions, ImageProgress};
use crate::sandbox::docker::DockerBackend;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build one of cordon's images: its base from Debian packages by debootstrap (no
    /// registry needed), then its Dockerfile from images/NAME/.
    #[command(
        after_help = "On a terminal the build is one updating line (the time so far and its last line); in a\npipe, a line every 10 s; with -v, every line. If it fails, its last lines are shown.\n\nExit status: 0 built, 2 no such image recipe, 5 the engine or the build failed."
    )]
    Build {
        /// Which image (see `cordon image ls`).
        #[arg(default_value = "python")]
        name: String,
        /// Rebuild the debootstrap base too, even if it exists.
        #[arg(long)]
        rebuild_base: bool,
    },
    /// List the images cordon can build and whether they are present.
    #[command(after_help = "Exit status: 0 listed, 5 the engine cannot be reached.")]
    Ls,
}

pub async fn image(cmd: ImageCommand) -> u8 {
    let backend = match DockerBackend::connect().await {
        Ok(b) => b,
        Err(e) => {
            report_error(&e);
            return EXIT_SANDBOX_ERROR;
        }
    };
    match cmd {
        ImageCommand::Build { name, rebuild_base } => {
            let Some(recipe) = image::recipe_for(&name) else {
                let known: Vec<&str> = image::recipes().iter().map(|r| r.name).collect();
                eprintln!(
                    "cordon: {}: no image recipe named `{name}`; cordon can build: {}",
                    super::error_word(),
                    known.join(", ")
                );
                return EXIT_INVALID;
            };
            let shown = std::sync::Mutex::new(Progress::start(Mode::for_term(&term::get())));
            let progress = |p: ImageProgress| {
                let Ok(mut shown) = shown.lock() else { return };
                let mut err = std::io::stderr();
                match p {
                    ImageProgress::Stage(s) => shown.print(&mut err, &format!("cordon: {s}")),
                    ImageProgress::Line(l) => shown.line(&mut err, &l),
                }
            };
            let opts = BuildOptions {
                rebuild_base,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let built = image::build(backend.client(), recipe, &opts, &progress).await;
            let seen = match shown.into_inner() {
                Ok(p) => p.finish(),
                Err(poisoned) => poisoned.into_inner().finish(),
            };
            match built {
                Ok(id) => {
                    let done = format!(
                        "built {} ({id}) in {:.0}s",
                        recipe.reference,
                        started.elapsed().as_secs_f64()
                    );
                    eprintln!(
                        "cordon: {}",
                        term::paint(term::get().colour_stderr, term::Tone::Good, &done)
                    );
                    0
                }
                Err(e) => {
                    if seen.mode() != Mode::Raw && seen.lines() > 0 {
                        eprintln!(
                            "cordon: the build's last {} of {} output lines (-v shows them all):",
                            seen.tail().count(),
                            seen.lines()
                        );
                        for l in seen.tail() {
                            eprintln!("  {l}");
                        }
                    }
                    report_error(&e);
                    EXIT_SANDBOX_ERROR
                }
            }
        }
        ImageCommand::Ls => {
            for r in image::recipes() {
                let state = match image::local_image_id(backend.client(), r.reference).await {
                    Ok(Some(id)) => format!("present {id}"),
                    Ok(None) => "not built".to_string(),
                    Err(e) => format!("unknown ({e})"),
                };
                println!("{:<10} {:<24} {state}", r.name, r.reference);
            }
            0
        }
    }
}
