//! `cordon image build|ls`.

use clap::Subcommand;

use super::{EXIT_INVALID, EXIT_SANDBOX_ERROR, report_error};
use crate::image::{self, BuildOptions, ImageProgress};
use crate::sandbox::docker::DockerBackend;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build one of cordon's images: its base from Debian packages by debootstrap (no
    /// registry needed), then its Dockerfile from images/NAME/.
    Build {
        /// Which image (see `cordon image ls`).
        #[arg(default_value = "python")]
        name: String,
        /// Rebuild the debootstrap base too, even if it exists.
        #[arg(long)]
        rebuild_base: bool,
    },
    /// List the images cordon can build and whether they are present.
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
                    "cordon: error: no image recipe named `{name}`; cordon can build: {}",
                    known.join(", ")
                );
                return EXIT_INVALID;
            };
            let progress = |p: ImageProgress| match p {
                ImageProgress::Stage(s) => eprintln!("cordon: {s}"),
                ImageProgress::Line(l) => eprintln!("  {l}"),
            };
            let opts = BuildOptions {
                rebuild_base,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            match image::build(backend.client(), recipe, &opts, &progress).await {
                Ok(id) => {
                    eprintln!(
                        "cordon: built {} ({id}) in {:.0}s",
                        recipe.reference,
                        started.elapsed().as_secs_f64()
                    );
                    0
                }
                Err(e) => {
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
