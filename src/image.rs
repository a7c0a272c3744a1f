//! Resolving a job's image locally and building cordon's own images (never pulling).
//!
//! cordon never pulls an image. Its own images are built on this host from two layers:
//!
//! 1. a base image (e.g. `cordon/base-python:bookworm`): `debootstrap --variant=minbase` into
//!    a temporary directory, whose tree is streamed as a tar into the engine's image import
//!    (`POST /images/create?fromSrc=-`). Skipped when the base exists, unless asked.
//! 2. the recipe's `Dockerfile` from `images/<name>/` (embedded in the binary), built on top
//!    of the base by the engine's classic builder with network `none`.
//!
//! Every stage and every line of debootstrap and build output is reported through a
//! progress callback, so a first `cordon run` shows what it is doing.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, CreateImageOptionsBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// The image a job runs in when its spec names none.
pub use crate::spec::DEFAULT_IMAGE;

/// Where debootstrap is looked for before `PATH`.
const DEBOOTSTRAP_CANDIDATES: &[&str] = &["/usr/sbin/debootstrap", "/sbin/debootstrap"];

/// Size of the chunks the rootfs tar is sent to the engine in.
const TAR_CHUNK: usize = 1 << 20;

/// How many debootstrap output lines an error message carries.
const ERROR_TAIL_LINES: usize = 8;

/// What a build is doing, for a terminal or an event stream.
#[derive(Debug, Clone)]
pub enum ImageProgress {
    /// A new stage started ("debootstrap bookworm into …", "importing base image", …).
    Stage(String),
    /// One line of output of the current stage (debootstrap, the image build).
    Line(String),
}

/// A base image made from a Debian release with debootstrap and imported into the engine.
#[derive(Debug)]
pub struct BaseRecipe {
    /// Image repository, e.g. `cordon/base-python`.
    pub repo: &'static str,
    /// Image tag, e.g. `bookworm`.
    pub tag: &'static str,
    /// `repo:tag`, the name the recipe's Dockerfile builds `FROM`.
    pub reference: &'static str,
    /// Debian suite given to debootstrap.
    pub suite: &'static str,
    /// Debian mirror given to debootstrap.
    pub mirror: &'static str,
    /// Packages installed on top of `--variant=minbase`.
    pub include: &'static [&'static str],
    /// Dockerfile-style instructions applied at import (`ENV`, `LABEL`, `CMD`, …).
    pub changes: &'static [&'static str],
}

/// One file of a recipe's build context, embedded in the binary.
#[derive(Debug)]
pub struct ContextFile {
    /// Path inside the build context.
    pub path: &'static str,
    /// The file's contents.
    pub contents: &'static str,
}

/// A recipe cordon knows how to build; `recipe_for("python")` and
/// `recipe_for_reference("cordon/python:3.11")`.
#[derive(Debug)]
pub struct ImageRecipe {
    /// Short name, as in `cordon image build python` and `images/python/`.
    pub name: &'static str,
    /// The image reference the build is tagged with.
    pub reference: &'static str,
    /// What the image is for, one line.
    pub description: &'static str,
    /// The base image the Dockerfile builds on.
    pub base: &'static BaseRecipe,
    /// The build context: the files of `images/<name>/` the build needs.
    pub context: &'static [ContextFile],
    /// Programs of this cordon installation added to the context as `bin/<name>` (mode 0755):
    /// `cordon` (the running program) and `cordon-egress` (found as a `prepare` finds it).
    pub programs: &'static [&'static str],
}

static BASE_PYTHON: BaseRecipe = BaseRecipe {
    repo: "cordon/base-python",
    tag: "bookworm",
    reference: "cordon/base-python:bookworm",
    suite: "bookworm",
    mirror: "http://deb.debian.org/debian",
    include: &[
        "ca-certificates",
        "python3",
        "python3-pip",
        "python3-venv",
        "python3-pytest",
        "python3-pytest-cov",
    ],
    changes: &[
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        "LABEL org.cordon.image=base-python",
        "CMD [\"/bin/sh\"]",
    ],
};

/// The controller image's reference: its tag is cordon's version.
pub const CONTROLLER_IMAGE: &str = concat!("cordon/controller:", env!("CARGO_PKG_VERSION"));

static RECIPES: [ImageRecipe; 2] = [
    ImageRecipe {
        name: "python",
        reference: DEFAULT_IMAGE,
        description: "Debian bookworm, Python 3.11, pip, venv, pytest, pytest-cov; user sandbox (1000)",
        base: &BASE_PYTHON,
        context: &[ContextFile {
            path: "Dockerfile",
            contents: include_str!("../images/python/Dockerfile"),
        }],
        programs: &[],
    },
    // `cordon serve` for Kubernetes (deploy/kubernetes.yaml): this cordon and its
    // cordon-egress on the python image's base, so a node that runs jobs debootstraps once.
    ImageRecipe {
        name: "controller",
        reference: CONTROLLER_IMAGE,
        description: "cordon serve with cordon-egress (this build's programs); user cordon (10001)",
        base: &BASE_PYTHON,
        context: &[ContextFile {
            path: "Dockerfile",
            contents: include_str!("../images/controller/Dockerfile"),
        }],
        programs: &["cordon", "cordon-egress"],
    },
];

/// Every recipe cordon knows how to build.
pub fn recipes() -> &'static [ImageRecipe] {
    &RECIPES
}

/// The recipe named `name` (`"python"`).
pub fn recipe_for(name: &str) -> Option<&'static ImageRecipe> {
    RECIPES.iter().find(|r| r.name == name)
}

/// The recipe that builds `reference` (`"cordon/python:3.11"`).
pub fn recipe_for_reference(reference: &str) -> Option<&'static ImageRecipe> {
    RECIPES.iter().find(|r| r.reference == reference)
}

/// Options of [`build`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Rebuild the base image with debootstrap even when it exists.
    pub rebuild_base: bool,
    /// Directory the temporary rootfs is made in (about 400 MB while it exists);
    /// `std::env::temp_dir()` when `None`.
    pub work_dir: Option<PathBuf>,
}

/// Why an image could not be resolved or built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Another build of the same image could not be waited for.
    #[error(transparent)]
    Lock(#[from] crate::state::LockError),

    #[error("no image recipe named `{name}`; known recipes: {known}")]
    UnknownRecipe { name: String, known: String },

    #[error(
        "image `{reference}` is not in the docker engine and cordon never pulls images; \
         load it with `docker load` or build it with `docker build -t {reference}`, \
         or use one of cordon's own images ({known})"
    )]
    Missing { reference: String, known: String },

    #[error(
        "debootstrap is not installed (looked in /usr/sbin, /sbin and PATH); install it with \
         `apt-get install debootstrap`: cordon builds its base images locally from Debian \
         packages and never pulls images"
    )]
    DebootstrapMissing,

    #[error(
        "building the base image `{reference}` needs root (debootstrap creates files owned by \
         other users); run `cordon image build {recipe}` once as root"
    )]
    NotRoot {
        reference: &'static str,
        recipe: &'static str,
    },

    #[error("could not start debootstrap at {}; check that it is executable", path.display())]
    DebootstrapSpawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "debootstrap {suite} failed ({status}); check that the Debian mirror {mirror} is \
         reachable and the work directory has about 400 MB free; last output: {tail}"
    )]
    DebootstrapFailed {
        suite: &'static str,
        mirror: &'static str,
        status: String,
        tail: String,
    },

    #[error(
        "could not use the work directory {}; choose a writable directory with about 400 MB \
         free (BuildOptions::work_dir)",
        dir.display()
    )]
    WorkDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "mount points are still active under {} after debootstrap; unmount them \
         (`umount -R -l`) before removing the directory",
        dir.display()
    )]
    MountsLeft { dir: PathBuf },

    #[error(
        "could not stream the root filesystem {} to the docker engine; check the work \
         directory and rebuild the base image",
        dir.display()
    )]
    RootfsTar {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("the task streaming the root filesystem stopped unexpectedly; retry the build")]
    RootfsTask {
        #[source]
        source: tokio::task::JoinError,
    },

    #[error(
        "the docker engine could not import the base image `{reference}`; check the daemon's \
         log and its free disk space, then retry"
    )]
    Import {
        reference: &'static str,
        #[source]
        source: bollard::errors::Error,
    },

    #[error(
        "building `{reference}` failed: {message}; check images/{recipe}/Dockerfile, or \
         rebuild the base image (`cordon image build {recipe} --rebuild-base`)"
    )]
    BuildFailed {
        reference: &'static str,
        recipe: &'static str,
        message: String,
    },

    #[error(
        "`{reference}` was built but the docker engine does not list it; check that nothing \
         removed it meanwhile and retry"
    )]
    VanishedAfterBuild { reference: String },

    #[error(
        "docker engine request failed while {action}; check that the docker daemon is running \
         and that cordon may use its socket"
    )]
    Engine {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("could not assemble the build context of `{recipe}`; this is a bug in cordon")]
    Context {
        recipe: &'static str,
        #[source]
        source: io::Error,
    },
}

fn known_recipes() -> String {
    RECIPES
        .iter()
        .map(|r| format!("{} ({})", r.name, r.reference))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The recipe named `name`, or an error listing the known ones.
pub fn require_recipe(name: &str) -> Result<&'static ImageRecipe, ImageError> {
    recipe_for(name).ok_or_else(|| ImageError::UnknownRecipe {
        name: name.to_owned(),
        known: known_recipes(),
    })
}

/// The local image id (sha256:…) or None when the engine has no such image. Never pulls.
pub async fn local_image_id(
    docker: &Docker,
    reference: &str,
) -> Result<Option<String>, ImageError> {
    match docker.inspect_image(reference).await {
        Ok(info) => Ok(Some(info.id.unwrap_or_default()).filter(|id| !id.is_empty())),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(source) => Err(ImageError::Engine {
            action: format!("inspecting image `{reference}`"),
            source,
        }),
    }
}

/// The image id of `reference`: the local image when present; otherwise, for one of cordon's
/// own images, builds it (reporting progress); otherwise an error. Never pulls.
pub async fn resolve(
    docker: &Docker,
    reference: &str,
    opts: &BuildOptions,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<String, ImageError> {
    if let Some(id) = local_image_id(docker, reference).await? {
        return Ok(id);
    }
    let Some(recipe) = recipe_for_reference(reference) else {
        return Err(ImageError::Missing {
            reference: reference.to_owned(),
            known: known_recipes(),
        });
    };
    progress(ImageProgress::Stage(format!(
        "{reference} is not built yet; building it (first use, about a minute)"
    )));
    build(docker, recipe, opts, progress).await
}

/// Builds the recipe's image (and its base when missing); returns the new image id.
///
/// Builds of the same recipe in one process are serialised; a caller that had to wait for
/// another build of the same image gets that build's result instead of building again.
pub async fn build(
    docker: &Docker,
    recipe: &ImageRecipe,
    opts: &BuildOptions,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<String, ImageError> {
    let mut waited = false;
    let _guard = crate::state::BuildLock::take(recipe.reference, || {
        waited = true;
        progress(ImageProgress::Stage(format!(
            "waiting for another build of {} to finish",
            recipe.reference
        )));
    })
    .await?;
    if waited && let Some(id) = local_image_id(docker, recipe.reference).await? {
        progress(ImageProgress::Stage(format!(
            "{} was just built ({id})",
            recipe.reference
        )));
        return Ok(id);
    }

    let previous = local_image_id(docker, recipe.reference).await?;
    let previous_base = ensure_base(docker, recipe, opts, progress).await?;
    let id = build_from_context(docker, recipe, progress).await?;
    // Remove what this build replaced, the image before its base (the engine refuses while
    // an image is still used by an environment image, a container or another tag).
    for old in [previous, previous_base].into_iter().flatten() {
        if old != id {
            remove_superseded(docker, &old).await;
        }
    }
    Ok(id)
}

/// Removes an image a rebuild left untagged, unless something still uses it.
async fn remove_superseded(docker: &Docker, id: &str) {
    match docker
        .remove_image(
            id,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
    {
        Ok(_) => tracing::info!(image = id, "removed the image this build replaced"),
        Err(e) => tracing::debug!(image = id, error = %e, "kept the replaced image"),
    }
}

/// Makes sure the recipe's base image exists; returns the id of the base image it replaced.
async fn ensure_base(
    docker: &Docker,
    recipe: &ImageRecipe,
    opts: &BuildOptions,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<Option<String>, ImageError> {
    let base = recipe.base;
    let _guard = crate::state::BuildLock::take(base.reference, || {}).await?;
    let previous = local_image_id(docker, base.reference).await?;
    if let Some(id) = previous.as_deref()
        && !opts.rebuild_base
    {
        progress(ImageProgress::Stage(format!(
            "base image {} present ({}), reusing it",
            base.reference,
            short_id(id)
        )));
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NotRoot {
            reference: base.reference,
            recipe: recipe.name,
        });
    }
    let debootstrap = find_debootstrap().ok_or(ImageError::DebootstrapMissing)?;

    let work_dir = opts.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_dir).map_err(|source| ImageError::WorkDir {
        dir: work_dir.clone(),
        source,
    })?;
    let tmp = tempfile::Builder::new()
        .prefix("cordon-rootfs-")
        .tempdir_in(&work_dir)
        .map_err(|source| ImageError::WorkDir {
            dir: work_dir.clone(),
            source,
        })?;
    // Declared before anything that runs in the directory, so it is dropped last.
    let mut rootfs = RootfsDir::new(tmp);
    let result = async {
        let target = rootfs.path().to_path_buf();
        run_debootstrap(&debootstrap, base, &target, progress).await?;
        if !mounts_under(&target).is_empty() {
            return Err(ImageError::MountsLeft { dir: target });
        }
        import_rootfs(docker, base, &target, progress).await
    }
    .await;
    rootfs.remove().await;
    let id = result?;
    Ok(previous.filter(|old| *old != id))
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

fn find_debootstrap() -> Option<PathBuf> {
    let candidates = DEBOOTSTRAP_CANDIDATES.iter().map(PathBuf::from);
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|dir| dir.join("debootstrap"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates.chain(on_path).find(|p| p.is_file())
}

/// Kills debootstrap's whole process group if the build is dropped (cancelled) mid-way;
/// its children (dpkg in the chroot) would otherwise keep writing into the rootfs.
struct ProcessGroupGuard {
    pgid: Option<i32>,
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            tracing::warn!(pgid, "build cancelled: killing debootstrap's process group");
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn run_debootstrap(
    debootstrap: &Path,
    base: &BaseRecipe,
    target: &Path,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<(), ImageError> {
    progress(ImageProgress::Stage(format!(
        "debootstrap {} into {} (from {})",
        base.suite,
        target.display(),
        base.mirror
    )));
    let mut cmd = tokio::process::Command::new(debootstrap);
    cmd.arg("--variant=minbase");
    if !base.include.is_empty() {
        cmd.arg(format!("--include={}", base.include.join(",")));
    }
    cmd.arg(base.suite)
        .arg(target)
        .arg(base.mirror)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    tracing::info!(?cmd, "running debootstrap");
    let mut child = cmd.spawn().map_err(|source| ImageError::DebootstrapSpawn {
        path: debootstrap.to_path_buf(),
        source,
    })?;
    let mut group = ProcessGroupGuard {
        pgid: child.id().and_then(|id| i32::try_from(id).ok()),
    };

    let mut tail: VecDeque<String> = VecDeque::with_capacity(ERROR_TAIL_LINES);
    let mut on_line = |line: String| {
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            return;
        }
        tracing::debug!(target: "cordon::image::debootstrap", "{line}");
        if tail.len() == ERROR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        progress(ImageProgress::Line(line));
    };
    let mut stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
    let mut stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            line = next_line(&mut stdout), if stdout.is_some() => match line {
                Some(line) => on_line(line),
                None => stdout = None,
            },
            line = next_line(&mut stderr), if stderr.is_some() => match line {
                Some(line) => on_line(line),
                None => stderr = None,
            },
        }
    }
    let status = child.wait().await;
    // debootstrap has exited; its trap has unmounted what it mounted.
    group.pgid = None;
    let status = status.map_err(|source| ImageError::DebootstrapSpawn {
        path: debootstrap.to_path_buf(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::DebootstrapFailed {
            suite: base.suite,
            mirror: base.mirror,
            status: status.to_string(),
            tail: tail.into_iter().collect::<Vec<_>>().join(" | "),
        })
    }
}

async fn next_line<R>(lines: &mut Option<tokio::io::Lines<R>>) -> Option<String>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    match lines {
        // A read error ends that stream like EOF; the exit status tells the outcome.
        Some(lines) => lines.next_line().await.ok().flatten(),
        None => None,
    }
}

async fn import_rootfs(
    docker: &Docker,
    base: &BaseRecipe,
    rootfs: &Path,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<String, ImageError> {
    progress(ImageProgress::Stage(format!(
        "importing base image {}",
        base.reference
    )));
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let sent = Arc::new(AtomicU64::new(0));
    let tar_task = {
        let root = rootfs.to_path_buf();
        let sent = Arc::clone(&sent);
        tokio::task::spawn_blocking(move || write_rootfs_tar(&root, tx, &sent))
    };
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(base.repo)
        .tag(base.tag)
        .changes(base.changes.iter().map(|c| (*c).to_owned()).collect())
        .build();
    let mut stream = docker.create_image(Some(options), Some(bollard::body_try_stream(body)), None);
    let mut import_result = Ok(());
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(status) = info.status.filter(|s| !s.trim().is_empty()) {
                    progress(ImageProgress::Line(status.trim().to_owned()));
                }
            }
            Err(source) => {
                import_result = Err(source);
                break;
            }
        }
    }
    drop(stream);
    let tar_result = tar_task
        .await
        .map_err(|source| ImageError::RootfsTask { source })?;
    match (import_result, tar_result) {
        (Ok(()), Ok(())) => {}
        // The engine stopped reading first: its error is the cause.
        (Err(source), Ok(())) => {
            return Err(ImageError::Import {
                reference: base.reference,
                source,
            });
        }
        (Err(source), Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            return Err(ImageError::Import {
                reference: base.reference,
                source,
            });
        }
        (_, Err(source)) => {
            return Err(ImageError::RootfsTar {
                dir: rootfs.to_path_buf(),
                source,
            });
        }
    }
    let id = local_image_id(docker, base.reference)
        .await?
        .ok_or_else(|| ImageError::VanishedAfterBuild {
            reference: base.reference.to_owned(),
        })?;
    progress(ImageProgress::Line(format!(
        "imported {} ({} MB streamed) as {}",
        base.reference,
        sent.load(Ordering::Relaxed) / 1_000_000,
        short_id(&id)
    )));
    Ok(id)
}

/// An `io::Write` that sends fixed-size chunks into a channel (from a blocking thread).
struct ChannelWriter<'a> {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: &'a AtomicU64,
}

impl ChannelWriter<'_> {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(TAR_CHUNK));
        let len = chunk.len() as u64;
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the docker engine stopped reading the image",
            )
        })?;
        self.sent.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

impl Write for ChannelWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= TAR_CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// Streams the rootfs at `root` as a tar into `tx`. On failure the error is also sent into
/// the channel, so the upload aborts instead of importing a truncated image.
fn write_rootfs_tar(
    root: &Path,
    tx: mpsc::Sender<io::Result<Bytes>>,
    sent: &AtomicU64,
) -> io::Result<()> {
    let mut writer = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(TAR_CHUNK),
        sent,
    };
    let result = (|| {
        let mut builder = tar::Builder::new(&mut writer);
        builder.follow_symlinks(false);
        builder.sparse(false);
        builder.mode(tar::HeaderMode::Complete);
        append_tree(&mut builder, root)?;
        builder.into_inner()?.flush()
    })();
    if let Err(e) = &result
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
    }
    result
}

/// What of a debootstrapped tree goes into the image.
enum Keep {
    /// The entry, and for a directory its contents.
    All,
    /// A directory without its contents (the engine provides `/dev`, `/proc`, `/sys`).
    DirOnly,
    /// Nothing (host files debootstrap copies in, apt's package lists and caches).
    Skip,
}

fn keep(rel: &Path, is_dir: bool, is_file: bool) -> Keep {
    let Some(rel) = rel.to_str() else {
        return Keep::All;
    };
    match rel {
        "dev" | "proc" | "sys" | "tmp" | "var/tmp" if is_dir => Keep::DirOnly,
        "etc/resolv.conf" | "etc/hostname" | "etc/hosts" => Keep::Skip,
        _ if is_file
            && (rel.starts_with("var/lib/apt/lists/")
                || rel.starts_with("var/cache/apt/")
                || rel.starts_with("var/cache/debconf/") && rel.ends_with("-old")) =>
        {
            Keep::Skip
        }
        _ => Keep::All,
    }
}

/// Appends the tree under `root` (not `root` itself) in pre-order, sorted, without crossing
/// into another filesystem and without device nodes, sockets or fifos.
fn append_tree<W: Write>(builder: &mut tar::Builder<W>, root: &Path) -> io::Result<()> {
    let root_dev = std::fs::symlink_metadata(root)?.dev();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        entries.sort();
        let mut subdirs = Vec::new();
        for name in entries {
            let rel_path = rel.join(&name);
            let path = root.join(&rel_path);
            let meta = std::fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            match keep(&rel_path, ft.is_dir(), ft.is_file()) {
                Keep::Skip => continue,
                Keep::DirOnly => {
                    builder.append_dir(&rel_path, &path)?;
                    continue;
                }
                Keep::All => {}
            }
            if ft.is_dir() {
                builder.append_dir(&rel_path, &path)?;
                if meta.dev() == root_dev {
                    subdirs.push(rel_path);
                } else {
                    tracing::warn!(path = %path.display(), "not descending into another filesystem");
                }
            } else if ft.is_file() || ft.is_symlink() {
                builder.append_path_with_name(&path, &rel_path)?;
            } else {
                tracing::debug!(path = %path.display(), "skipping special file");
            }
        }
        // Pop order is reverse push order: push reversed to visit in sorted order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The temporary rootfs. Removed on every path: [`RootfsDir::remove`] on the normal path,
/// `Drop` when the build is cancelled or panics. Anything still mounted inside (debootstrap
/// killed before its cleanup trap ran, e.g. a bind-mounted `/dev`) is unmounted first, and
/// the directory is left in place rather than deleted through a mount that would not go.
struct RootfsDir {
    dir: Option<tempfile::TempDir>,
}

impl RootfsDir {
    fn new(dir: tempfile::TempDir) -> Self {
        Self { dir: Some(dir) }
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    async fn remove(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = tokio::task::spawn_blocking(move || remove_rootfs(dir)).await;
        }
    }
}

impl Drop for RootfsDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            remove_rootfs(dir);
        }
    }
}

fn remove_rootfs(dir: tempfile::TempDir) {
    let path = dir.path().to_path_buf();
    for mount in mounts_under(&path) {
        tracing::warn!(mount = %mount.display(), "unmounting leftover mount in the rootfs");
        let status = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mount)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            tracing::warn!(mount = %mount.display(), ?status, "umount failed");
        }
    }
    if !mounts_under(&path).is_empty() {
        let kept = dir.keep();
        tracing::error!(
            dir = %kept.display(),
            "mounts remain under the temporary rootfs; not deleting it: unmount them and remove it by hand"
        );
        return;
    }
    if let Err(e) = dir.close() {
        tracing::warn!(dir = %path.display(), error = %e, "could not remove the temporary rootfs");
    }
}

/// Where the program `name` of [`ImageRecipe::programs`] is: `cordon` is the running program
/// (`$CORDON_BIN` first, for callers that are not cordon, such as tests); `cordon-egress` is
/// looked for as a `prepare` looks for it.
fn program_path(name: &str) -> io::Result<PathBuf> {
    let not_found = |what: String| io::Error::new(io::ErrorKind::NotFound, what);
    match name {
        "cordon" => match std::env::var_os("CORDON_BIN") {
            Some(p) => Ok(PathBuf::from(p)),
            None => std::env::current_exe(),
        },
        crate::sandbox::sidecar::PROGRAM => {
            crate::sandbox::sidecar::find_program().map_err(|e| not_found(e.to_string()))
        }
        other => Err(not_found(format!(
            "no program `{other}` to add to an image"
        ))),
    }
}

/// The recipe's build context, as an in-memory tar of its embedded files and its programs.
fn build_context(recipe: &ImageRecipe) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for name in recipe.programs {
        let path = program_path(name)?;
        let data = std::fs::read(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, format!("bin/{name}"), data.as_slice())?;
    }
    for file in recipe.context {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, file.path, file.contents.as_bytes())?;
    }
    builder.into_inner()
}

/// The classic builder colours a step's stderr (`ESC[91m` … `ESC[0m`); progress lines are
/// plain text.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, then one final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn build_from_context(
    docker: &Docker,
    recipe: &ImageRecipe,
    progress: &(dyn Fn(ImageProgress) + Send + Sync),
) -> Result<String, ImageError> {
    progress(ImageProgress::Stage(format!(
        "building {}",
        recipe.reference
    )));
    let context = build_context(recipe).map_err(|source| ImageError::Context {
        recipe: recipe.name,
        source,
    })?;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(recipe.reference)
        .rm(true)
        .forcerm(true)
        .networkmode("none")
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(ImageError::BuildFailed {
                        reference: recipe.reference,
                        recipe: recipe.name,
                        message: detail.trim().to_owned(),
                    });
                }
                for text in [info.stream, info.status].into_iter().flatten() {
                    for line in strip_ansi(&text).lines() {
                        let line = line.trim_end();
                        if !line.is_empty() {
                            tracing::debug!(target: "cordon::image::build", "{line}");
                            progress(ImageProgress::Line(line.to_owned()));
                        }
                    }
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(ImageError::BuildFailed {
                    reference: recipe.reference,
                    recipe: recipe.name,
                    message: error.trim().to_owned(),
                });
            }
            Err(source) => {
                return Err(ImageError::Engine {
                    action: format!("building `{}`", recipe.reference),
                    source,
                });
            }
        }
    }
    let id = local_image_id(docker, recipe.reference)
        .await?
        .ok_or_else(|| ImageError::VanishedAfterBuild {
            reference: recipe.reference.to_owned(),
        })?;
    progress(ImageProgress::Stage(format!(
        "built {} ({})",
        recipe.reference,
        short_id(&id)
    )));
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn recipes_are_found_by_name_and_reference() {
        let python = recipe_for("python").expect("python recipe");
        assert_eq!(python.reference, DEFAULT_IMAGE);
        assert_eq!(python.base.reference, "cordon/base-python:bookworm");
        assert_eq!(
            format!("{}:{}", python.base.repo, python.base.tag),
            python.base.reference
        );
        assert!(std::ptr::eq(
            recipe_for_reference("cordon/python:3.11").expect("by reference"),
            python
        ));
        assert!(recipe_for("ruby").is_none());
        assert!(recipe_for_reference("python:3.11").is_none());
        assert!(recipes().iter().any(|r| r.reference == DEFAULT_IMAGE));
        let err = require_recipe("ruby").expect_err("unknown recipe");
        assert!(
            err.to_string().contains("python (cordon/python:3.11)"),
            "{err}"
        );
    }

    #[test]
    fn context_tar_holds_the_embedded_dockerfile() {
        let recipe = recipe_for("python").expect("python recipe");
        let tar_bytes = build_context(recipe).expect("context");
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut names = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").to_string_lossy().into_owned();
            if name == "Dockerfile" {
                let mut text = String::new();
                entry.read_to_string(&mut text).expect("read");
                assert!(text.contains(&format!("FROM {}", recipe.base.reference)));
                assert!(text.contains("LABEL org.cordon.image=python"));
                assert!(text.contains("PYTHONDONTWRITEBYTECODE=1"));
                assert!(!text.contains("ENTRYPOINT"));
            }
            names.push(name);
        }
        assert_eq!(names, vec!["Dockerfile".to_owned()]);
    }

    #[test]
    fn debootstrapped_tree_filter() {
        assert!(matches!(keep(Path::new("dev"), true, false), Keep::DirOnly));
        assert!(matches!(
            keep(Path::new("proc"), true, false),
            Keep::DirOnly
        ));
        assert!(matches!(
            keep(Path::new("etc/resolv.conf"), false, true),
            Keep::Skip
        ));
        assert!(matches!(
            keep(
                Path::new("var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease"),
                false,
                true
            ),
            Keep::Skip
        ));
        assert!(matches!(
            keep(Path::new("var/lib/apt/lists/partial"), true, false),
            Keep::All
        ));
        assert!(matches!(
            keep(Path::new("usr/bin/python3"), false, true),
            Keep::All
        ));
    }

    #[test]
    fn rootfs_tar_streams_tree_without_special_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        std::fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\n").expect("write");
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).expect("symlink");
        std::fs::create_dir_all(root.join("dev")).expect("mkdir");
        std::fs::write(root.join("dev/null-ish"), b"x").expect("write");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/resolv.conf"), b"nameserver 10.0.0.1\n").expect("write");
        let _listener = std::os::unix::net::UnixListener::bind(root.join("sock")).expect("socket");

        let (tx, mut rx) = mpsc::channel(1024);
        let sent = AtomicU64::new(0);
        write_rootfs_tar(root, tx, &sent).expect("tar");
        let mut bytes = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            bytes.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(bytes.len() as u64, sent.load(Ordering::Relaxed));
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                e.path()
                    .expect("path")
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            vec!["bin", "dev", "etc", "usr", "usr/bin", "usr/bin/tool"]
        );
    }

    #[test]
    fn build_output_loses_its_colours() {
        assert_eq!(strip_ansi("\u{1b}[91mboom\u{1b}[0m\n"), "boom\n");
        assert_eq!(strip_ansi("Step 1/7 : FROM x"), "Step 1/7 : FROM x");
        assert_eq!(strip_ansi("\u{1b}[0m"), "");
    }

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\"), "/x\\");
    }

    #[test]
    fn errors_read_well() {
        let e = ImageError::DebootstrapMissing.to_string();
        assert!(
            e.contains("apt-get install debootstrap") && e.contains("never pulls"),
            "{e}"
        );
        let e = ImageError::Missing {
            reference: "foo:1".into(),
            known: known_recipes(),
        }
        .to_string();
        assert!(
            e.starts_with("image `foo:1` is not in the docker engine"),
            "{e}"
        );
        assert!(!e.ends_with('.'));
    }

    #[test]
    fn build_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let docker = Docker::connect_with_socket_defaults();
        if let Ok(docker) = docker {
            let recipe = recipe_for("python").expect("python recipe");
            let opts = BuildOptions::default();
            let progress = |_: ImageProgress| {};
            let fut = build(&docker, recipe, &opts, &progress);
            assert_send(&fut);
            let fut = resolve(&docker, DEFAULT_IMAGE, &opts, &progress);
            assert_send(&fut);
        }
    }
}
