//! Tar streams in and out of the sandbox.
//!
//! * **load**: [`write_workspace_tar`] / [`workspace_tar_stream`] turn a host directory into an
//!   uncompressed tar for the Engine's archive upload. The tree is streamed (never held in
//!   memory), symlinks are stored as links and never followed, special files are skipped,
//!   ownership is forced to the sandbox user and permission bits are normalised.
//! * **collect**: [`extract_artifacts`] / [`extract_artifacts_stream`] unpack the tar the Engine
//!   returns for `GET /containers/{id}/archive`. That tar is produced next to untrusted code and
//!   is treated as hostile: only regular files and directories are created, strictly inside
//!   `dest`, never through an existing symlink, never over an existing file, with fixed modes
//!   and under size / count caps. Refused entries are recorded rather than aborting the
//!   extraction.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::debug;

use crate::spec::pattern::Excludes;

/// Size of the chunks [`workspace_tar_stream`] emits.
const CHUNK_SIZE: usize = 64 * 1024;
/// Chunks buffered between the archiving thread and the consumer (both directions).
const CHANNEL_CAPACITY: usize = 4;
/// When a workspace cap is exceeded, keep walking (without reading contents) to tell the user
/// how far over it is, but not beyond this many entries.
const RECOUNT_MAX_ENTRIES: u64 = 1_000_000;
/// Longest entry name accepted when extracting, in bytes.
const MAX_NAME_BYTES: usize = 1024;
/// Longest single path component accepted when extracting, in bytes.
const MAX_COMPONENT_BYTES: usize = 255;
/// Raw archive bytes allowed per entry on top of file contents (headers, PAX records, GNU long
/// names, padding) when computing the read budget.
const PER_ENTRY_OVERHEAD: u64 = 4096;
/// Fixed slack in the read budget (end-of-archive blocks and the like).
const BUDGET_SLACK: u64 = 1024 * 1024;

/// Errors from building or extracting archives.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A workspace file or directory could not be read (or changed while it was archived).
    #[error("cannot read {}: check its permissions or add it to the workspace excludes", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file or directory could not be created under the extraction directory.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An exclude pattern is not valid (a spec's are checked before; this is for other callers).
    #[error("workspace exclude #{index}: {reason}")]
    BadExclude { index: usize, reason: String },
    /// The sink receiving the workspace tar failed.
    #[error("cannot write the workspace archive")]
    Output {
        #[source]
        source: io::Error,
    },
    /// The workspace exceeds a cap. `what` is `"bytes"` or `"files, directories and links"`;
    /// `actual` is exact when `exact`, otherwise a lower bound.
    #[error(
        "workspace has {} {what} (cap {limit}): add excludes or raise the limit",
        amount(*.actual, *.exact)
    )]
    TooLarge {
        what: &'static str,
        actual: u64,
        exact: bool,
        limit: u64,
    },
    /// The artifact tar is truncated or not a tar (or its download failed). `extracted` lists
    /// what was written before the error; those files are complete and stay on disk.
    #[error(
        "artifact archive is truncated or malformed ({} files extracted before the error)",
        extracted.files.len()
    )]
    Malformed {
        extracted: Box<Extracted>,
        #[source]
        source: io::Error,
    },
    /// The other side of a streaming transfer went away.
    #[error("archive transfer was cancelled: the other side went away")]
    Cancelled,
}

fn amount(actual: u64, exact: bool) -> String {
    if exact {
        actual.to_string()
    } else {
        format!("more than {actual}")
    }
}

// ---------------------------------------------------------------------------------------------
// Workspace in
// ---------------------------------------------------------------------------------------------

/// How to archive a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceOptions {
    /// Names matched against every path component: plain names (`.git`), `*` globs (`*.pyc`,
    /// `build*`), or, when the pattern contains a `/`, a path relative to the workspace root
    /// (`docs/build`). A matching directory is skipped with everything below it.
    pub excludes: Vec<String>,
    /// Owner written into every entry.
    pub uid: u64,
    /// Group written into every entry.
    pub gid: u64,
    /// Cap on the total size of regular file contents.
    pub max_bytes: u64,
    /// Cap on the number of entries of any kind (files, directories, symlinks).
    pub max_files: u64,
}

/// What went into a workspace tar. `skipped` counts device files, fifos and sockets (excluded
/// paths are not counted); `bytes` is the total size of regular file contents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub skipped: u64,
    pub bytes: u64,
}

impl TarStats {
    fn entries(&self) -> u64 {
        self.files + self.dirs + self.symlinks
    }
}

/// Writes `src` (a directory; not itself included) as an uncompressed tar to `out`.
///
/// Whether the relative link `target`, stored at `rel` (relative to the workspace root),
/// resolves above the root. Absolute targets resolve inside the sandbox's own filesystem.
fn escapes(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            std::path::Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            std::path::Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

/// Entry names are relative (`a`, `a/b.txt`); symlinks are stored as symlinks and never
/// followed; devices, fifos and sockets are skipped; every entry gets `opts.uid`/`opts.gid`
/// with empty user/group names; setuid/setgid/sticky bits are dropped, directories get at
/// least `u+rwx` and files `u+rw`. On error the output is left without an end-of-archive
/// marker, so a consumer cannot mistake it for a complete archive.
pub fn write_workspace_tar<W: Write>(
    src: &Path,
    opts: &WorkspaceOptions,
    out: W,
) -> Result<TarStats, ArchiveError> {
    let mut sink = PoisonableWriter {
        inner: out,
        poisoned: false,
    };
    let result = {
        let mut builder = tar::Builder::new(&mut sink);
        match append_workspace(&mut builder, src, opts) {
            Ok(stats) => builder
                .finish()
                .map(|()| stats)
                .map_err(|source| ArchiveError::Output { source }),
            Err(e) => {
                // `Builder`'s destructor writes the end-of-archive marker; make sure it can't.
                builder.get_mut().poisoned = true;
                Err(e)
            }
        }
    };
    let stats = result?;
    sink.inner
        .flush()
        .map_err(|source| ArchiveError::Output { source })?;
    Ok(stats)
}

/// Runs [`write_workspace_tar`] on a blocking thread and returns its output as a stream of
/// chunks (about 64 KiB each) for an HTTP body, plus the handle giving the stats or the typed
/// error. If archiving fails the stream ends with an `io::Error` (never cleanly), so an upload
/// of a partial tar fails. If the stream is dropped, the archiver stops at its next write and
/// the handle yields [`ArchiveError::Cancelled`].
///
/// Must be called from within a Tokio runtime.
pub fn workspace_tar_stream(
    src: PathBuf,
    opts: WorkspaceOptions,
) -> (
    impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    tokio::task::JoinHandle<Result<TarStats, ArchiveError>>,
) {
    let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
    let handle = tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter::new(tx);
        let result = match write_workspace_tar(&src, &opts, &mut writer) {
            Err(ArchiveError::Output { .. }) if writer.cancelled => Err(ArchiveError::Cancelled),
            other => other,
        };
        match &result {
            Ok(_) | Err(ArchiveError::Cancelled) => writer.done = true,
            Err(e) => writer.fail(crate::error::error_chain(e)),
        }
        result
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (stream, handle)
}

fn append_workspace<W: Write>(
    builder: &mut tar::Builder<W>,
    src: &Path,
    opts: &WorkspaceOptions,
) -> Result<TarStats, ArchiveError> {
    // The root is resolved once, here: the walk below starts from a real directory and
    // follows no link from then on (a link to the root swapped meanwhile changes nothing).
    let given = src;
    let src = &fs::canonicalize(given).map_err(|source| ArchiveError::Read {
        path: given.to_path_buf(),
        source,
    })?;
    let root_meta = fs::symlink_metadata(src).map_err(|source| ArchiveError::Read {
        path: given.to_path_buf(),
        source,
    })?;
    if !root_meta.is_dir() {
        return Err(ArchiveError::Read {
            path: given.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "workspace is not a directory"),
        });
    }
    let src = src.as_path();
    let excludes = Excludes::new(src, &opts.excludes)
        .map_err(|(index, reason)| ArchiveError::BadExclude { index, reason })?;
    let mut walk = walkdir::WalkDir::new(src)
        .follow_links(false)
        .follow_root_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !excludes.matches(e.path(), e.file_type().is_dir()));

    let mut stats = TarStats::default();
    while let Some(item) = walk.next() {
        let entry = item.map_err(|e| walk_error(src, e))?;
        if entry.depth() == 0 {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(src)
            .expect("walkdir yields paths below its root");
        let file_type = entry.file_type();
        if !(file_type.is_dir() || file_type.is_file() || file_type.is_symlink()) {
            debug!(path = %path.display(), "skipping special file in workspace");
            stats.skipped += 1;
            continue;
        }
        if stats.entries() >= opts.max_files {
            let (more, _, exact) = recount(&mut walk, false);
            return Err(ArchiveError::TooLarge {
                what: "files, directories and links",
                actual: stats.entries() + 1 + more,
                exact,
                limit: opts.max_files,
            });
        }
        let meta = entry.metadata().map_err(|e| walk_error(src, e))?;
        let mut header = tar::Header::new_gnu();
        header.set_uid(opts.uid);
        header.set_gid(opts.gid);
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        let perm = meta.mode() & 0o777;
        if file_type.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(perm | 0o700);
            header.set_size(0);
            builder
                .append_data(&mut header, rel, io::empty())
                .map_err(|source| ArchiveError::Output { source })?;
            stats.dirs += 1;
        } else if file_type.is_symlink() {
            let target = fs::read_link(path).map_err(|source| ArchiveError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            // A relative link that climbs out of the workspace points nowhere useful in
            // the sandbox, and the engine refuses the whole upload for it: leave it out.
            if escapes(rel, &target) {
                debug!(path = %path.display(), target = %target.display(), "skipping a link that leaves the workspace");
                stats.skipped += 1;
                continue;
            }
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder
                .append_link(&mut header, rel, &target)
                .map_err(|source| ArchiveError::Output { source })?;
            stats.symlinks += 1;
        } else {
            let file = open_regular(path, &meta)?;
            let size = meta.len();
            if stats.bytes.saturating_add(size) > opts.max_bytes {
                let (_, more, exact) = recount(&mut walk, true);
                return Err(ArchiveError::TooLarge {
                    what: "bytes",
                    actual: stats.bytes + size + more,
                    exact,
                    limit: opts.max_bytes,
                });
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(perm | 0o600);
            header.set_size(size);
            let mut reader = ExactReader {
                inner: file,
                remaining: size,
                error: None,
            };
            if let Err(source) = builder.append_data(&mut header, rel, &mut reader) {
                return Err(match reader.error.take() {
                    Some(source) => ArchiveError::Read {
                        path: path.to_path_buf(),
                        source,
                    },
                    None => ArchiveError::Output { source },
                });
            }
            stats.files += 1;
            stats.bytes += size;
        }
    }
    Ok(stats)
}

/// Opens a regular file found by the walk, making sure what was opened is the very inode that
/// was `lstat`ed (so a file swapped for a symlink meanwhile is never read through the link).
fn open_regular(path: &Path, meta: &fs::Metadata) -> Result<File, ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    };
    // No link is followed even if one was swapped in after the walk looked, and a FIFO
    // swapped in cannot block the open.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(read_err)?;
    let opened = file.metadata().map_err(read_err)?;
    if !opened.is_file() || opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(read_err(io::Error::other(
            "file was replaced while the workspace was being archived",
        )));
    }
    Ok(file)
}

fn walk_error(src: &Path, e: walkdir::Error) -> ArchiveError {
    let path = e.path().unwrap_or(src).to_path_buf();
    let source = e
        .into_io_error()
        .unwrap_or_else(|| io::Error::other("filesystem loop"));
    ArchiveError::Read { path, source }
}

/// Counts what is left in the walk (entries, regular-file bytes) after a cap was hit. Gives up
/// after [`RECOUNT_MAX_ENTRIES`]; the flag says whether the count is complete.
fn recount<I>(walk: &mut I, want_bytes: bool) -> (u64, u64, bool)
where
    I: Iterator<Item = walkdir::Result<walkdir::DirEntry>>,
{
    let (mut entries, mut bytes) = (0u64, 0u64);
    for item in walk {
        let Ok(entry) = item else { continue };
        let ft = entry.file_type();
        if !(ft.is_dir() || ft.is_file() || ft.is_symlink()) {
            continue;
        }
        if entries >= RECOUNT_MAX_ENTRIES {
            return (entries, bytes, false);
        }
        entries += 1;
        if want_bytes && ft.is_file() {
            bytes = bytes.saturating_add(entry.metadata().map(|m| m.len()).unwrap_or(0));
        }
    }
    (entries, bytes, true)
}

/// A writer that refuses all writes once poisoned (used to suppress `tar::Builder`'s
/// end-of-archive marker after an error).
struct PoisonableWriter<W> {
    inner: W,
    poisoned: bool,
}

impl<W: Write> Write for PoisonableWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(io::Error::other("archive abandoned after an error"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.poisoned {
            return Ok(());
        }
        self.inner.flush()
    }
}

/// Reads exactly `remaining` bytes from a workspace file, remembering the file's own error so it
/// can be told apart from an error of the archive sink.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let failure = match self.inner.read(&mut buf[..want]) {
            Ok(0) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while the workspace was being archived",
            ),
            Ok(n) => {
                self.remaining -= n as u64;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => e,
        };
        self.error = Some(failure);
        Err(io::Error::other("reading a workspace file failed"))
    }
}

/// Feeds [`workspace_tar_stream`]'s channel from the blocking archiver thread.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    /// The receiver is gone.
    cancelled: bool,
    /// The stream has been terminated properly (all data sent, or an error sent).
    done: bool,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK_SIZE),
            cancelled: false,
            done: false,
        }
    }

    fn gone(&mut self) -> io::Error {
        self.cancelled = true;
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            "workspace upload stream was dropped",
        )
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK_SIZE);
        self.tx.blocking_send(Ok(chunk)).map_err(|_| self.gone())
    }

    /// Ends the stream with an error (best effort: the receiver may be gone).
    fn fail(&mut self, message: String) {
        self.done = true;
        let _ = self.tx.blocking_send(Err(io::Error::other(message)));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.tx.is_closed() {
            return Err(self.gone());
        }
        let n = data.len().min(CHUNK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_SIZE {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        // Reached without `done` only if the archiver panicked: never let the stream end as if
        // the archive were complete.
        if !self.done {
            self.fail("workspace archiver stopped unexpectedly".to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Artifacts out
// ---------------------------------------------------------------------------------------------

/// Caps applied while extracting artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Total bytes of regular files written. The first file that would exceed it is refused
    /// and reading stops.
    pub max_total_bytes: u64,
    /// Bytes of one regular file. A bigger file is refused (its data skipped) and reading
    /// continues.
    pub max_file_bytes: u64,
    /// Entries of any kind read (including refused ones). Reading stops at the first entry
    /// beyond it.
    pub max_entries: u64,
}

impl ExtractLimits {
    /// Raw bytes we are willing to read from the archive at all: file contents plus a fixed
    /// allowance per entry. Skipped data (refused oversize files) counts against it too, so a
    /// hostile archive cannot keep us reading forever.
    fn read_budget(&self) -> u64 {
        self.max_total_bytes
            .saturating_add(
                self.max_entries
                    .saturating_add(1)
                    .saturating_mul(PER_ENTRY_OVERHEAD),
            )
            .saturating_add(BUDGET_SLACK)
    }
}

/// An archive entry that was not extracted. `path` is the name as found in the archive (lossy
/// UTF-8, control characters escaped), or `(rest of archive)` when reading stopped between
/// entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEntry {
    pub path: String,
    pub reason: String,
}

/// Result of an extraction.
#[derive(Debug, Default)]
pub struct Extracted {
    /// Host paths of the regular files written, in archive order.
    pub files: Vec<PathBuf>,
    /// Entries not extracted, with the reason; a cap that stopped the reading is recorded here
    /// too.
    pub refused: Vec<RefusedEntry>,
    /// Total bytes written.
    pub bytes: u64,
    /// With [`ArtifactRoots`]: per artifact, the entries found under it.
    pub per_root: Vec<u64>,
}

impl Extracted {
    fn refuse(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        let entry = RefusedEntry {
            path: path.into(),
            reason: reason.into(),
        };
        debug!(path = %entry.path, reason = %entry.reason, "refused artifact entry");
        self.refused.push(entry);
    }
}

/// Extracts a (hostile) tar under `dest`, which is created if missing.
///
/// Only regular files and directories are created; links, devices, fifos, absolute names and
/// names with `..` are refused and recorded in [`Extracted::refused`]. Nothing is written
/// outside `dest` or through a symlink already under it; existing files are never
/// overwritten; modes are 0o644 for files and 0o755 for directories. See [`ExtractLimits`] for
/// the caps: hitting them is not an error, it is recorded as a refusal.
///
/// A truncated or garbage archive gives [`ArchiveError::Malformed`], which carries the
/// [`Extracted`] so far (complete files only: a partly written file is removed). A filesystem
/// error under `dest` gives [`ArchiveError::Write`]; then `dest` should be discarded.
pub fn extract_artifacts<R: Read>(
    input: R,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<Extracted, ArchiveError> {
    extract(input, dest, limits, None)
}

/// Which declared artifact an entry of one archive of several belongs to, and the name it is
/// extracted under: relative to that artifact's parent, as the engine's archive API names
/// entries (`/out/junit.xml` gives `junit.xml`, `/out` gives `out/…`).
#[derive(Debug, Clone)]
pub struct ArtifactRoots {
    /// Each artifact's path components, in declared order.
    roots: Vec<Vec<String>>,
}

impl ArtifactRoots {
    /// `paths` are absolute, normalized, and none is under another.
    pub fn new(paths: &[String]) -> ArtifactRoots {
        ArtifactRoots {
            roots: paths
                .iter()
                .map(|p| {
                    p.split('/')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .collect(),
        }
    }

    /// The artifact `components` (relative to `/`) is under, and how many leading components
    /// to drop; `None` if it is under none.
    fn place(&self, components: &[&str]) -> Option<(usize, usize)> {
        self.roots.iter().enumerate().find_map(|(i, root)| {
            let under = !root.is_empty()
                && components.len() >= root.len()
                && root.iter().zip(components).all(|(a, b)| a == b);
            under.then(|| (i, root.len() - 1))
        })
    }
}

/// [`extract_artifacts_stream`] for one archive of several artifacts whose names are relative
/// to `/` (what the gate sends): each entry is placed by `roots`, and one under none of them
/// is refused. [`Extracted::per_root`] counts the entries seen under each.
pub async fn extract_sent_artifacts_stream<S, E>(
    stream: S,
    dest: PathBuf,
    limits: ExtractLimits,
    roots: ArtifactRoots,
) -> Result<Extracted, ArchiveError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    extract_stream(stream, move |reader| {
        extract(reader, &dest, &limits, Some(&roots))
    })
    .await
}

fn extract<R: Read>(
    input: R,
    dest: &Path,
    limits: &ExtractLimits,
    roots: Option<&ArtifactRoots>,
) -> Result<Extracted, ArchiveError> {
    fs::create_dir_all(dest).map_err(|source| ArchiveError::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    let budget = limits.read_budget();
    let state = Rc::new(ReadState::default());
    let mut archive = tar::Archive::new(BudgetReader {
        inner: input,
        remaining: budget,
        state: Rc::clone(&state),
    });
    let mut out = Extracted {
        per_root: vec![0; roots.map_or(0, |r| r.roots.len())],
        ..Default::default()
    };
    let stopped_by_budget = |out: &mut Extracted, path: String| {
        out.refuse(
            path,
            format!("archive read budget of {budget} bytes exhausted: stopped reading the archive"),
        );
    };

    let mut entries = match archive.entries() {
        Ok(entries) => entries,
        Err(source) => return Err(malformed(out, source)),
    };
    let mut seen = 0u64;
    loop {
        let mut entry = match entries.next() {
            None => break,
            Some(Ok(entry)) => entry,
            Some(Err(source)) => {
                if state.exhausted.get() {
                    stopped_by_budget(&mut out, "(rest of archive)".to_string());
                    return Ok(out);
                }
                return Err(malformed(out, source));
            }
        };
        let raw_name = entry.path_bytes().into_owned();
        let shown = display_name(&raw_name);
        seen += 1;
        if seen > limits.max_entries {
            out.refuse(
                shown,
                format!(
                    "entry cap of {} reached: stopped reading the archive",
                    limits.max_entries
                ),
            );
            return Ok(out);
        }

        let kind = entry.header().entry_type();
        let is_file = kind == tar::EntryType::Regular;
        let is_dir = kind == tar::EntryType::Directory;
        if kind == tar::EntryType::XGlobalHeader {
            continue; // metadata only (PAX global header), nothing to create
        }
        if !is_file && !is_dir {
            out.refuse(shown, type_reason(kind));
            continue;
        }
        let mut components = match check_name(&raw_name) {
            Ok(c) => c,
            Err(reason) => {
                out.refuse(shown, reason);
                continue;
            }
        };
        if let Some(roots) = roots {
            match roots.place(&components) {
                Some((root, strip)) => {
                    out.per_root[root] += 1;
                    components.drain(..strip);
                }
                None if components.is_empty() && is_dir => continue,
                None => {
                    out.refuse(shown, "not under any declared artifact path");
                    continue;
                }
            }
        }
        if components.is_empty() {
            if !is_dir {
                out.refuse(shown, "empty name");
            }
            continue; // the archive root (`./`): dest itself
        }

        if is_dir {
            if let Some(reason) = ensure_dirs(dest, &components)? {
                out.refuse(shown, reason);
            }
            continue;
        }

        let size = entry.size();
        if size > limits.max_file_bytes {
            out.refuse(
                shown,
                format!(
                    "file is {size} bytes, over the per-file cap of {}",
                    limits.max_file_bytes
                ),
            );
            continue;
        }
        if out.bytes.saturating_add(size) > limits.max_total_bytes {
            out.refuse(
                shown,
                format!(
                    "total size cap of {} bytes reached: stopped reading the archive",
                    limits.max_total_bytes
                ),
            );
            return Ok(out);
        }
        let parents = &components[..components.len() - 1];
        if let Some(reason) = ensure_dirs(dest, parents)? {
            out.refuse(shown, reason);
            continue;
        }
        let target = dest.join(components.join("/"));
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&target)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                out.refuse(shown, "already exists");
                continue;
            }
            Err(source) => {
                return Err(ArchiveError::Write {
                    path: target,
                    source,
                });
            }
        };
        let write_err = |source| ArchiveError::Write {
            path: target.clone(),
            source,
        };
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(write_err)?;
        match copy_entry(&mut entry, &mut file, size) {
            Ok(()) => {}
            Err(CopyError::Write(source)) => {
                drop(file);
                let _ = fs::remove_file(&target);
                return Err(write_err(source));
            }
            Err(CopyError::Read(source)) => {
                drop(file);
                let _ = fs::remove_file(&target);
                if state.exhausted.get() {
                    stopped_by_budget(&mut out, shown);
                    return Ok(out);
                }
                return Err(malformed(out, source));
            }
        }
        out.files.push(target);
        out.bytes += size;
    }

    if state.eof.get() {
        // The tar crate takes end-of-input at an entry boundary as the end of the archive; a
        // complete archive ends with zero blocks instead, so this one was cut short.
        return Err(malformed(
            out,
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ended without an end-of-archive marker",
            ),
        ));
    }
    Ok(out)
}

/// [`extract_artifacts`] reading from an async byte stream (e.g. bollard's archive download),
/// on a blocking thread. The stream is polled only as fast as extraction proceeds and is
/// dropped as soon as extraction stops (caps reached). A stream error ends extraction with
/// [`ArchiveError::Malformed`] whose source chain contains that error.
///
/// Must be called from within a Tokio runtime.
pub async fn extract_artifacts_stream<S, E>(
    stream: S,
    dest: PathBuf,
    limits: ExtractLimits,
) -> Result<Extracted, ArchiveError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    extract_stream(stream, move |reader| {
        extract_artifacts(reader, &dest, &limits)
    })
    .await
}

/// Runs `extract` on a blocking thread, feeding it `stream` as fast as it reads.
async fn extract_stream<S, E, F>(mut stream: S, extract: F) -> Result<Extracted, ArchiveError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: FnOnce(ChannelReader) -> Result<Extracted, ArchiveError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let handle = tokio::task::spawn_blocking(move || extract(ChannelReader::new(rx)));
    loop {
        tokio::select! {
            item = stream.next() => {
                let chunk = match item {
                    None => Chunk::End,
                    Some(Ok(bytes)) => Chunk::Data(bytes),
                    Some(Err(e)) => Chunk::Failed(io::Error::other(e)),
                };
                let last = !matches!(chunk, Chunk::Data(_));
                if tx.send(chunk).await.is_err() || last {
                    break;
                }
            }
            () = tx.closed() => break,
        }
    }
    drop(tx);
    drop(stream);
    match handle.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ArchiveError::Cancelled),
    }
}

fn malformed(extracted: Extracted, source: io::Error) -> ArchiveError {
    ArchiveError::Malformed {
        extracted: Box::new(extracted),
        source,
    }
}

fn type_reason(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Symlink => "symbolic link (links are never extracted)".to_string(),
        tar::EntryType::Link => "hard link (links are never extracted)".to_string(),
        tar::EntryType::Char => "character device".to_string(),
        tar::EntryType::Block => "block device".to_string(),
        tar::EntryType::Fifo => "fifo".to_string(),
        other => format!(
            "unsupported entry type {}",
            display_name(&[other.as_byte()])
        ),
    }
}

/// Splits an archive name into safe components (`.` and empty components dropped), or says
/// why it is refused.
fn check_name(raw: &[u8]) -> Result<Vec<&str>, String> {
    let name = std::str::from_utf8(raw).map_err(|_| "name is not valid UTF-8".to_string())?;
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("name is longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == '\\') {
        return Err("name contains a control character or a backslash".to_string());
    }
    if name.starts_with('/') {
        return Err("absolute path".to_string());
    }
    let mut components = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("name contains a `..` component".to_string()),
            c if c.len() > MAX_COMPONENT_BYTES => {
                return Err(format!(
                    "name has a component longer than {MAX_COMPONENT_BYTES} bytes"
                ));
            }
            c => components.push(c),
        }
    }
    Ok(components)
}

/// Makes sure `dest/c1/c2/…` are all real directories, creating missing ones (0o755). Returns
/// a refusal reason if one of them exists as something else (a symlink in particular).
fn ensure_dirs(dest: &Path, components: &[&str]) -> Result<Option<String>, ArchiveError> {
    let mut current = dest.to_path_buf();
    for (i, c) in components.iter().enumerate() {
        current.push(c);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(meta) => {
                let what = if meta.file_type().is_symlink() {
                    "is a symlink"
                } else {
                    "exists and is not a directory"
                };
                return Ok(Some(format!("{} {what}", components[..=i].join("/"))));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&current)
                    .and_then(|()| fs::set_permissions(&current, fs::Permissions::from_mode(0o755)))
                    .map_err(|source| ArchiveError::Write {
                        path: current.clone(),
                        source,
                    })?;
            }
            Err(source) => {
                return Err(ArchiveError::Write {
                    path: current,
                    source,
                });
            }
        }
    }
    Ok(None)
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies exactly `size` bytes of an entry's data; a short entry is a read error.
fn copy_entry<R: Read, W: Write>(entry: &mut R, out: &mut W, size: u64) -> Result<(), CopyError> {
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match entry.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(CopyError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "archive ended in the middle of a file",
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        left -= n as u64;
    }
    out.flush().map_err(CopyError::Write)
}

/// Name for reports: lossy UTF-8 with control characters escaped.
fn display_name(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.chars().any(char::is_control) {
        text.chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect()
    } else {
        text.into_owned()
    }
}

/// What [`BudgetReader`] observed, shared with the extraction loop (the tar crate's
/// `Entries` gives no access to the reader).
#[derive(Default)]
struct ReadState {
    /// The read budget ran out.
    exhausted: Cell<bool>,
    /// The input ended.
    eof: Cell<bool>,
}

/// Caps the raw bytes read from the archive and notes whether input ended.
struct BudgetReader<R> {
    inner: R,
    remaining: u64,
    state: Rc<ReadState>,
}

impl<R: Read> Read for BudgetReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            self.state.exhausted.set(true);
            return Err(io::Error::other("archive read budget exhausted"));
        }
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.state.eof.set(true);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// What [`extract_artifacts_stream`] forwards to the blocking extractor.
enum Chunk {
    Data(Bytes),
    Failed(io::Error),
    End,
}

/// Blocking `Read` over the chunks forwarded by [`extract_artifacts_stream`].
struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
    failed: bool,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
            ended: false,
            failed: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.len());
                buf[..n].copy_from_slice(&self.current[..n]);
                self.current.advance(n);
                return Ok(n);
            }
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            if self.failed {
                return Err(io::Error::other("artifact download failed"));
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::Failed(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                Some(Chunk::End) => self.ended = true,
                None => {
                    self.failed = true;
                    return Err(io::Error::other("artifact download was abandoned"));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_climbing_out_of_the_workspace_are_recognized() {
        assert!(escapes(Path::new("up"), Path::new("../secret.txt")));
        assert!(escapes(Path::new("a/b"), Path::new("../../x")));
        assert!(!escapes(Path::new("a/b"), Path::new("../x")));
        assert!(!escapes(Path::new("a/b"), Path::new("c/../../x")));
        assert!(!escapes(Path::new("l"), Path::new("/etc/passwd")));
    }
    use std::time::Duration;

    fn opts() -> WorkspaceOptions {
        WorkspaceOptions {
            excludes: vec![
                ".git".into(),
                "*.pyc".into(),
                "node_modules".into(),
                "./docs/build/".into(),
            ],
            uid: 1000,
            gid: 1000,
            max_bytes: 1 << 30,
            max_files: 10_000,
        }
    }

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[derive(Debug)]
    struct Seen {
        kind: tar::EntryType,
        mode: u32,
        uid: u64,
        gid: u64,
        link: Option<String>,
        data: Vec<u8>,
    }

    /// Parses a tar produced by the workspace writer, checking it is complete.
    fn parse(tar_bytes: &[u8]) -> BTreeMap<String, Seen> {
        assert!(tar_bytes.len() >= 1024 && tar_bytes.len().is_multiple_of(512));
        assert!(tar_bytes[tar_bytes.len() - 1024..].iter().all(|&b| b == 0));
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let seen = Seen {
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                link: entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8(l.into_owned()).unwrap()),
                data: {
                    let mut v = Vec::new();
                    entry.read_to_end(&mut v).unwrap();
                    v
                },
            };
            assert!(out.insert(name, seen).is_none());
        }
        out
    }

    /// A workspace with a bit of everything. Returns (tempdir, workspace root).
    fn sample_tree() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ws");
        write(&root.join("a.txt"), b"alpha", 0o4755);
        write(&root.join("sub/b.txt"), b"bravo", 0o400);
        write(&root.join("sub/deeper/c.txt"), b"charlie", 0o644);
        write(&root.join("sub/cache.pyc"), b"bytecode", 0o644);
        write(&root.join(".git/config"), b"[core]", 0o644);
        write(&root.join("pkg/node_modules/x/index.js"), b"js", 0o644);
        write(&root.join("docs/build/out.html"), b"<html>", 0o644);
        write(&root.join("docs/index.md"), b"# doc", 0o644);
        fs::create_dir(root.join("ro")).unwrap();
        fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o1555)).unwrap();
        // Secret outside the workspace, reachable only through links.
        write(&tmp.path().join("outside/secret"), b"SECRET", 0o644);
        symlink("a.txt", root.join("link")).unwrap();
        symlink(tmp.path().join("outside"), root.join("dirlink")).unwrap();
        symlink("/nonexistent/target", root.join("dangling")).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(root.join("pipe"))
            .status()
            .unwrap();
        assert!(status.success());
        let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        (tmp, root)
    }

    #[test]
    fn workspace_round_trip() {
        let (_tmp, root) = sample_tree();
        let mut buf = Vec::new();
        let stats = write_workspace_tar(&root, &opts(), &mut buf).unwrap();
        let seen = parse(&buf);
        let names: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "a.txt",
                "dangling",
                "dirlink",
                "docs",
                "docs/index.md",
                "link",
                "pkg",
                "ro",
                "sub",
                "sub/b.txt",
                "sub/deeper",
                "sub/deeper/c.txt",
            ]
        );
        assert_eq!(
            stats,
            TarStats {
                files: 4,
                dirs: 5,
                symlinks: 3,
                skipped: 2,
                bytes: 5 + 5 + 7 + 5,
            }
        );
        for (name, e) in &seen {
            assert_eq!((e.uid, e.gid), (1000, 1000), "{name}");
            assert_eq!(e.mode & 0o7000, 0, "{name}: special bits kept");
        }
        assert_eq!(seen["a.txt"].mode, 0o755);
        assert_eq!(seen["a.txt"].data, b"alpha");
        assert_eq!(seen["sub/b.txt"].mode, 0o600);
        assert_eq!(seen["sub/deeper/c.txt"].mode, 0o644);
        assert_eq!(seen["ro"].kind, tar::EntryType::Directory);
        assert_eq!(seen["ro"].mode, 0o755);
        assert_eq!(seen["link"].kind, tar::EntryType::Symlink);
        assert_eq!(seen["link"].link.as_deref(), Some("a.txt"));
        assert_eq!(
            seen["dangling"].link.as_deref(),
            Some("/nonexistent/target")
        );
        assert_eq!(seen["dirlink"].kind, tar::EntryType::Symlink);
        assert!(seen["dirlink"].data.is_empty());
        assert!(
            !buf.windows(6).any(|w| w == b"SECRET"),
            "read a file through a symlink"
        );
    }

    /// A hostile checkout's links to host files and directories go into the tar as links
    /// (resolved inside the sandbox), never as what they point to on the host; a workspace
    /// given through a link to itself is walked from its real directory.
    #[test]
    fn workspace_links_to_host_files_are_sent_as_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ws");
        write(&root.join("keep.txt"), b"kept", 0o644);
        symlink("/etc/hostname", root.join("leak")).unwrap();
        symlink("/etc", root.join("dir")).unwrap();
        symlink(&root, tmp.path().join("ws-link")).unwrap();
        let host_files: Vec<Vec<u8>> = ["/etc/hostname", "/etc/passwd"]
            .iter()
            .filter_map(|p| fs::read(p).ok())
            .filter(|c| c.len() >= 4)
            .collect();
        assert!(!host_files.is_empty(), "this host has /etc/passwd");
        for given in [root.clone(), tmp.path().join("ws-link")] {
            let mut buf = Vec::new();
            let stats = write_workspace_tar(&given, &opts(), &mut buf).unwrap();
            let seen = parse(&buf);
            let names: Vec<&str> = seen.keys().map(String::as_str).collect();
            assert_eq!(names, ["dir", "keep.txt", "leak"], "a link was descended");
            assert_eq!(seen["leak"].kind, tar::EntryType::Symlink);
            assert_eq!(seen["leak"].link.as_deref(), Some("/etc/hostname"));
            assert_eq!(seen["dir"].kind, tar::EntryType::Symlink);
            assert_eq!(seen["dir"].link.as_deref(), Some("/etc"));
            assert!(seen["leak"].data.is_empty() && seen["dir"].data.is_empty());
            assert_eq!((stats.files, stats.symlinks, stats.bytes), (1, 2, 4));
            for host in &host_files {
                assert!(
                    !buf.windows(host.len()).any(|w| w == host.as_slice()),
                    "a host file's contents are in the tar"
                );
            }
        }
    }

    #[test]
    fn workspace_long_names_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let long = format!("{}/{}.txt", "d".repeat(120), "f".repeat(150));
        write(&tmp.path().join(&long), b"x", 0o644);
        let target = "t".repeat(200);
        symlink(&target, tmp.path().join("l")).unwrap();
        let mut buf = Vec::new();
        write_workspace_tar(tmp.path(), &opts(), &mut buf).unwrap();
        let seen = parse(&buf);
        assert_eq!(seen[&long].data, b"x");
        assert_eq!(seen["l"].link.as_deref(), Some(target.as_str()));
    }

    #[test]
    fn workspace_file_cap() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..10 {
            write(&tmp.path().join(format!("f{i}")), b"x", 0o644);
        }
        let opts = WorkspaceOptions {
            max_files: 4,
            ..opts()
        };
        let mut buf = Vec::new();
        let err = write_workspace_tar(tmp.path(), &opts, &mut buf).unwrap_err();
        match &err {
            ArchiveError::TooLarge {
                what,
                actual,
                exact,
                limit,
            } => {
                assert!(what.contains("files"));
                assert_eq!((*actual, *exact, *limit), (10, true, 4));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "workspace has 10 files, directories and links (cap 4): add excludes or raise the limit"
        );
        // No end-of-archive marker after an error.
        assert!(!buf.ends_with(&[0u8; 1024]));
    }

    #[test]
    fn workspace_byte_cap() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("a"), &[1u8; 600], 0o644);
        write(&tmp.path().join("b"), &[1u8; 600], 0o644);
        write(&tmp.path().join("c"), &[1u8; 600], 0o644);
        let opts = WorkspaceOptions {
            max_bytes: 1000,
            ..opts()
        };
        let err = write_workspace_tar(tmp.path(), &opts, Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::TooLarge {
                    what: "bytes",
                    actual: 1800,
                    exact: true,
                    limit: 1000
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("1800 bytes (cap 1000)"));
    }

    #[test]
    fn workspace_root_must_be_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        let err = write_workspace_tar(&missing, &opts(), Vec::new()).unwrap_err();
        assert!(matches!(&err, ArchiveError::Read { path, .. } if path == &missing));
        assert!(err.to_string().contains("missing"));
        let file = tmp.path().join("file");
        write(&file, b"x", 0o644);
        let err = write_workspace_tar(&file, &opts(), Vec::new()).unwrap_err();
        assert!(matches!(&err, ArchiveError::Read { path, .. } if path == &file));
    }

    #[test]
    fn workspace_unreadable_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("sub/locked.txt");
        write(&secret, b"x", 0o000);
        let locked_dir = tmp.path().join("zz-locked-dir");
        fs::create_dir(&locked_dir).unwrap();
        write(&locked_dir.join("inside"), b"x", 0o644);
        fs::set_permissions(&locked_dir, fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&secret).is_ok() {
            // Running as root (or with CAP_DAC_OVERRIDE): permissions can't make it unreadable.
            return;
        }
        let err = write_workspace_tar(tmp.path(), &opts(), Vec::new()).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Read { path, .. } if path == &secret),
            "{err:?}"
        );
        assert!(err.to_string().contains("locked.txt"));
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
        let err = write_workspace_tar(tmp.path(), &opts(), Vec::new()).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Read { path, .. } if path == &locked_dir),
            "{err:?}"
        );
        fs::set_permissions(&locked_dir, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn workspace_sink_error_is_output() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("a"), b"x", 0o644);
        let err = write_workspace_tar(tmp.path(), &opts(), Broken).unwrap_err();
        assert!(matches!(err, ArchiveError::Output { .. }), "{err:?}");
    }

    #[test]
    fn excludes_are_read_like_gitignore_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for f in [
            "a.pyc",
            "pkg/b.pyc",
            "docs/x.md",
            "docs/api/y.md",
            "build/o",
            "src/build/k",
        ] {
            write(&root.join(f), b"x", 0o644);
        }
        let mut o = opts();
        o.excludes = vec!["*.pyc".into(), "docs/*.md".into(), "/build".into()];
        let mut tar = Vec::new();
        write_workspace_tar(root, &o, &mut tar).unwrap();
        let mut names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().is_file())
            .map(|e| e.path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["docs/api/y.md", "src/build/k"]);
        o.excludes = vec!["x".repeat(crate::spec::pattern::MAX_PATTERN_BYTES + 1)];
        let err = write_workspace_tar(root, &o, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("exclude #0"), "{err}");
    }

    #[tokio::test]
    async fn workspace_stream_matches_direct_output() {
        let (_tmp, root) = sample_tree();
        write(&root.join("big.bin"), &vec![7u8; 300 * 1024], 0o644);
        let mut direct = Vec::new();
        let direct_stats = write_workspace_tar(&root, &opts(), &mut direct).unwrap();

        let (stream, handle) = workspace_tar_stream(root.clone(), opts());
        let chunks: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
        let stats = handle.await.unwrap().unwrap();
        assert_eq!(stats, direct_stats);
        assert!(chunks.len() > 4);
        assert!(
            chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= CHUNK_SIZE)
        );
        let joined: Vec<u8> = chunks.concat();
        assert_eq!(joined, direct);
    }

    #[tokio::test]
    async fn workspace_stream_ends_with_error_on_failure() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..500 {
            write(&tmp.path().join(format!("f{i:03}")), &[0u8; 100], 0o644);
        }
        let opts = WorkspaceOptions {
            max_files: 400,
            ..opts()
        };
        let (stream, handle) = workspace_tar_stream(tmp.path().to_path_buf(), opts);
        let items: Vec<_> = stream.collect().await;
        let last = items.last().unwrap();
        let msg = last.as_ref().unwrap_err().to_string();
        assert!(msg.contains("cap 400"), "{msg}");
        assert!(items[..items.len() - 1].iter().all(Result::is_ok));
        assert!(matches!(
            handle.await.unwrap(),
            Err(ArchiveError::TooLarge { limit: 400, .. })
        ));
    }

    #[tokio::test]
    async fn workspace_stream_stops_when_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("huge"), &vec![1u8; 16 << 20], 0o644);
        let (mut stream, handle) = workspace_tar_stream(tmp.path().to_path_buf(), opts());
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.len(), CHUNK_SIZE);
        drop(stream);
        let result = tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("archiver did not stop after the stream was dropped")
            .unwrap();
        assert!(matches!(result, Err(ArchiveError::Cancelled)), "{result:?}");
    }

    // ---- extraction ------------------------------------------------------------------------

    fn limits() -> ExtractLimits {
        ExtractLimits {
            max_total_bytes: 1 << 20,
            max_file_bytes: 1 << 20,
            max_entries: 100,
        }
    }

    /// Appends one entry with an arbitrary (unchecked) name and link name.
    fn raw_entry(tar: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, data: &[u8], link: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o4777);
        h.set_uid(0);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }

    /// One PAX extended header record: `"<len> <key>=<value>\n"`, len counting itself.
    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    fn file(tar: &mut Vec<u8>, name: &str, data: &[u8]) {
        raw_entry(tar, name.as_bytes(), tar::EntryType::Regular, data, b"");
    }

    fn end(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0u8; 1024]);
        tar
    }

    /// An archive the gate sent (names relative to `/`): each entry lands where the engine's
    /// API would name it for its artifact, and one under no declared artifact is refused.
    #[test]
    fn sent_entries_are_placed_under_their_artifact_or_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut tar = Vec::new();
        file(&mut tar, "out/junit.xml", b"<testsuite/>");
        raw_entry(
            &mut tar,
            b"out/report/",
            tar::EntryType::Directory,
            b"",
            b"",
        );
        file(&mut tar, "out/report/a.txt", b"a");
        file(&mut tar, "etc/passwd", b"root:x:0:0");
        file(&mut tar, "out/junit.xml.bak", b"not declared");
        let roots = ArtifactRoots::new(&[
            "/out/junit.xml".into(),
            "/out/report".into(),
            "/out/none".into(),
        ]);
        let x = extract(end(tar).as_slice(), dir.path(), &limits(), Some(&roots)).expect("extract");
        let mut files: Vec<String> = x
            .files
            .iter()
            .map(|f| {
                f.strip_prefix(dir.path())
                    .expect("under dest")
                    .display()
                    .to_string()
            })
            .collect();
        files.sort();
        assert_eq!(files, ["junit.xml", "report/a.txt"]);
        assert_eq!(x.per_root, [1, 2, 0]);
        let refused: Vec<String> = x.refused.iter().map(|r| r.path.clone()).collect();
        assert_eq!(refused, ["etc/passwd", "out/junit.xml.bak"]);
        assert!(
            x.refused
                .iter()
                .all(|r| r.reason == "not under any declared artifact path")
        );
        assert!(!dir.path().join("etc").exists());
    }

    fn reasons(x: &Extracted) -> Vec<(String, String)> {
        x.refused
            .iter()
            .map(|r| (r.path.clone(), r.reason.clone()))
            .collect()
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// Every path under `dir`, relative.
    fn tree(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                e.path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn extracts_docker_style_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let mut t = Vec::new();
        raw_entry(&mut t, b"out/", tar::EntryType::Directory, b"", b"");
        file(&mut t, "out/junit.xml", b"<testsuite/>");
        file(&mut t, "./out/cov/coverage.xml", b"<coverage/>");
        let x = extract_artifacts(&end(t)[..], &dest, &limits()).unwrap();
        assert!(x.refused.is_empty(), "{:?}", x.refused);
        assert_eq!(
            x.files,
            [
                dest.join("out/junit.xml"),
                dest.join("out/cov/coverage.xml")
            ]
        );
        assert_eq!(x.bytes, 12 + 11);
        assert_eq!(
            fs::read(dest.join("out/junit.xml")).unwrap(),
            b"<testsuite/>"
        );
        assert_eq!(mode_of(&dest.join("out/junit.xml")), 0o644);
        assert_eq!(mode_of(&dest.join("out")), 0o755);
        assert_eq!(mode_of(&dest.join("out/cov")), 0o755);
    }

    #[test]
    fn extracts_long_names_written_by_tar_builder() {
        let tmp = tempfile::tempdir().unwrap();
        let long = format!("out/{}/{}.xml", "d".repeat(120), "f".repeat(130));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let x = extract_artifacts(&bytes[..], tmp.path(), &limits()).unwrap();
        assert_eq!(x.files, [tmp.path().join(&long)]);
        assert_eq!(fs::read(tmp.path().join(&long)).unwrap(), b"abc");
    }

    #[test]
    fn refuses_hostile_names_and_types() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let mut t = Vec::new();
        file(&mut t, "/etc/evil", b"x");
        file(&mut t, "../escape", b"x");
        file(&mut t, "a/../../x", b"x");
        file(&mut t, "a/..", b"x");
        raw_entry(&mut t, b"..", tar::EntryType::Directory, b"", b"");
        raw_entry(&mut t, b"link", tar::EntryType::Symlink, b"", b"/etc");
        raw_entry(&mut t, b"hard", tar::EntryType::Link, b"", b"/etc/passwd");
        raw_entry(&mut t, b"tty", tar::EntryType::Char, b"", b"");
        raw_entry(&mut t, b"sda", tar::EntryType::Block, b"", b"");
        raw_entry(&mut t, b"pipe", tar::EntryType::Fifo, b"", b"");
        raw_entry(&mut t, b"cont", tar::EntryType::Continuous, b"x", b"");
        raw_entry(&mut t, b"bad\xff", tar::EntryType::Regular, b"x", b"");
        raw_entry(&mut t, b"esc\x1b[2J", tar::EntryType::Regular, b"x", b"");
        raw_entry(&mut t, b"back\\slash", tar::EntryType::Regular, b"x", b"");
        // A link followed by a file "through" it: the link is refused, so the file lands in
        // a real directory inside dest.
        raw_entry(&mut t, b"via", tar::EntryType::Symlink, b"", b"/tmp");
        file(&mut t, "via/x", b"inside");
        // PAX `path` records override the header name.
        for target in ["../pax-escape", "/tmp/pax-abs"] {
            raw_entry(
                &mut t,
                b"pax",
                tar::EntryType::XHeader,
                &pax_record("path", target),
                b"",
            );
            file(&mut t, "innocent", b"x");
        }
        file(&mut t, "good.xml", b"ok");
        let x = extract_artifacts(&end(t)[..], &dest, &limits()).unwrap();

        let got = reasons(&x);
        let expect_reason = |name: &str, needle: &str| {
            assert!(
                got.iter().any(|(p, r)| p == name && r.contains(needle)),
                "{name}: {needle} not in {got:?}"
            );
        };
        expect_reason("/etc/evil", "absolute");
        expect_reason("../escape", "..");
        expect_reason("a/../../x", "..");
        expect_reason("a/..", "..");
        expect_reason("..", "..");
        expect_reason("link", "symbolic link");
        expect_reason("hard", "hard link");
        expect_reason("tty", "character device");
        expect_reason("sda", "block device");
        expect_reason("pipe", "fifo");
        expect_reason("cont", "unsupported entry type");
        expect_reason("bad\u{fffd}", "UTF-8");
        expect_reason("esc\\u{1b}[2J", "control character");
        expect_reason("back\\slash", "backslash");
        expect_reason("via", "symbolic link");
        expect_reason("../pax-escape", "..");
        expect_reason("/tmp/pax-abs", "absolute");
        assert_eq!(got.len(), 17);

        assert_eq!(tree(&dest), ["good.xml", "via", "via/x"]);
        assert!(fs::symlink_metadata(dest.join("via")).unwrap().is_dir());
        assert_eq!(
            tree(tmp.path()),
            ["dest", "dest/good.xml", "dest/via", "dest/via/x"]
        );
        assert_eq!(x.files, [dest.join("via/x"), dest.join("good.xml")]);
    }

    #[test]
    fn never_writes_through_existing_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&elsewhere).unwrap();
        symlink(&elsewhere, dest.join("sub")).unwrap();
        symlink(elsewhere.join("target"), dest.join("leaf")).unwrap();
        let mut t = Vec::new();
        file(&mut t, "sub/x", b"pwned");
        file(&mut t, "sub/deep/y", b"pwned");
        raw_entry(&mut t, b"sub/newdir/", tar::EntryType::Directory, b"", b"");
        file(&mut t, "sub", b"pwned");
        file(&mut t, "leaf", b"pwned");
        let x = extract_artifacts(&end(t)[..], &dest, &limits()).unwrap();
        assert!(x.files.is_empty());
        let got = reasons(&x);
        assert_eq!(
            got,
            [
                ("sub/x".to_string(), "sub is a symlink".to_string()),
                ("sub/deep/y".to_string(), "sub is a symlink".to_string()),
                ("sub/newdir/".to_string(), "sub is a symlink".to_string()),
                ("sub".to_string(), "already exists".to_string()),
                ("leaf".to_string(), "already exists".to_string()),
            ]
        );
        assert!(tree(&elsewhere).is_empty(), "wrote through a symlink");
    }

    #[test]
    fn refuses_duplicates_and_file_dir_clashes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        file(&mut t, "a.txt", b"first");
        file(&mut t, "a.txt", b"second");
        file(&mut t, "a.txt/inner", b"x");
        raw_entry(&mut t, b"d/", tar::EntryType::Directory, b"", b"");
        raw_entry(&mut t, b"d/", tar::EntryType::Directory, b"", b"");
        file(&mut t, "d", b"x");
        let x = extract_artifacts(&end(t)[..], tmp.path(), &limits()).unwrap();
        assert_eq!(x.files, [tmp.path().join("a.txt")]);
        assert_eq!(fs::read(tmp.path().join("a.txt")).unwrap(), b"first");
        assert_eq!(
            reasons(&x),
            [
                ("a.txt".to_string(), "already exists".to_string()),
                (
                    "a.txt/inner".to_string(),
                    "a.txt exists and is not a directory".to_string()
                ),
                ("d".to_string(), "already exists".to_string()),
            ]
        );
    }

    #[test]
    fn per_file_cap_refuses_and_continues() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        file(&mut t, "small", b"12345");
        file(&mut t, "big", &[9u8; 20]);
        file(&mut t, "after", b"ok");
        let limits = ExtractLimits {
            max_file_bytes: 10,
            ..limits()
        };
        let x = extract_artifacts(&end(t)[..], tmp.path(), &limits).unwrap();
        assert_eq!(
            x.files,
            [tmp.path().join("small"), tmp.path().join("after")]
        );
        assert_eq!(x.bytes, 7);
        assert_eq!(x.refused.len(), 1);
        assert_eq!(x.refused[0].path, "big");
        assert!(x.refused[0].reason.contains("per-file cap of 10"));
        assert!(!tmp.path().join("big").exists());
    }

    #[test]
    fn total_cap_stops_reading() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        for name in ["a", "b", "c", "d"] {
            file(&mut t, name, &[1u8; 10]);
        }
        let limits = ExtractLimits {
            max_total_bytes: 25,
            ..limits()
        };
        let x = extract_artifacts(&end(t)[..], tmp.path(), &limits).unwrap();
        assert_eq!(x.files.len(), 2);
        assert_eq!(x.bytes, 20);
        assert_eq!(x.refused.len(), 1, "{:?}", x.refused);
        assert_eq!(x.refused[0].path, "c");
        assert!(x.refused[0].reason.contains("stopped reading"));
        assert_eq!(tree(tmp.path()), ["a", "b"]);
    }

    #[test]
    fn entry_cap_stops_reading() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        raw_entry(&mut t, b"l", tar::EntryType::Symlink, b"", b"x");
        for i in 0..10 {
            file(&mut t, &format!("f{i}"), b"x");
        }
        let limits = ExtractLimits {
            max_entries: 4,
            ..limits()
        };
        let x = extract_artifacts(&end(t)[..], tmp.path(), &limits).unwrap();
        assert_eq!(x.files.len(), 3);
        assert_eq!(x.refused.len(), 2);
        assert_eq!(x.refused[1].path, "f3");
        assert!(x.refused[1].reason.contains("entry cap of 4"));
    }

    /// A header announcing a huge entry followed by endless data: reading must stop.
    #[test]
    fn read_budget_bounds_hostile_sizes() {
        for kind in [tar::EntryType::Regular, tar::EntryType::GNULongName] {
            let tmp = tempfile::tempdir().unwrap();
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..4].copy_from_slice(b"bomb");
            h.set_entry_type(kind);
            h.set_size(1 << 40);
            h.set_cksum();
            let input = Read::chain(io::Cursor::new(h.as_bytes().to_vec()), io::repeat(0));
            let limits = ExtractLimits {
                max_total_bytes: 1 << 16,
                max_file_bytes: 1 << 10,
                max_entries: 10,
            };
            let x = extract_artifacts(input, tmp.path(), &limits).unwrap();
            let last = x.refused.last().unwrap();
            assert!(
                last.reason.contains("read budget"),
                "{kind:?}: {:?}",
                x.refused
            );
            assert!(tree(tmp.path()).is_empty());
        }
    }

    #[test]
    fn truncated_archive_is_malformed_but_keeps_partial_result() {
        let mut t = Vec::new();
        file(&mut t, "first.xml", b"complete");
        let boundary = t.len();
        file(&mut t, "second.xml", &[5u8; 5000]);
        let full = end(t);

        // Cut inside the second file's data.
        let tmp = tempfile::tempdir().unwrap();
        let err =
            extract_artifacts(&full[..boundary + 512 + 1000], tmp.path(), &limits()).unwrap_err();
        let ArchiveError::Malformed { extracted, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(extracted.files, [tmp.path().join("first.xml")]);
        assert_eq!(tree(tmp.path()), ["first.xml"], "partial file left behind");
        assert!(err.to_string().contains("1 files extracted"));

        // Cut exactly at an entry boundary (no end-of-archive marker).
        let tmp = tempfile::tempdir().unwrap();
        let err = extract_artifacts(&full[..boundary], tmp.path(), &limits()).unwrap_err();
        let ArchiveError::Malformed { extracted, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(extracted.files.len(), 1);

        // Cut inside a header.
        let tmp = tempfile::tempdir().unwrap();
        let err = extract_artifacts(&full[..boundary + 100], tmp.path(), &limits()).unwrap_err();
        assert!(matches!(err, ArchiveError::Malformed { .. }), "{err:?}");

        // The whole thing is fine.
        let tmp = tempfile::tempdir().unwrap();
        let x = extract_artifacts(&full[..], tmp.path(), &limits()).unwrap();
        assert_eq!(x.files.len(), 2);
    }

    #[test]
    fn garbage_is_malformed() {
        let tmp = tempfile::tempdir().unwrap();
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        let err = extract_artifacts(&garbage[..], tmp.path(), &limits()).unwrap_err();
        assert!(matches!(err, ArchiveError::Malformed { .. }), "{err:?}");
        let tmp = tempfile::tempdir().unwrap();
        let err = extract_artifacts(&b""[..], tmp.path(), &limits()).unwrap_err();
        assert!(matches!(err, ArchiveError::Malformed { .. }), "{err:?}");
    }

    fn chunked(data: Vec<u8>, size: usize) -> Vec<Result<Bytes, io::Error>> {
        data.chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    #[tokio::test]
    async fn extracts_from_stream() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        file(&mut t, "out/junit.xml", &[b'x'; 3000]);
        raw_entry(&mut t, b"out/evil", tar::EntryType::Symlink, b"", b"/");
        let stream = futures_util::stream::iter(chunked(end(t), 700));
        let x = extract_artifacts_stream(stream, tmp.path().to_path_buf(), limits())
            .await
            .unwrap();
        assert_eq!(x.files, [tmp.path().join("out/junit.xml")]);
        assert_eq!(x.refused.len(), 1);
        assert_eq!(
            fs::read(tmp.path().join("out/junit.xml")).unwrap().len(),
            3000
        );
    }

    #[tokio::test]
    async fn stream_error_is_malformed_with_cause() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Vec::new();
        file(&mut t, "a", b"a");
        file(&mut t, "b", &[0u8; 2000]);
        let mut items = chunked(t, 1024);
        items.truncate(2);
        items.push(Err(io::Error::other("connection reset by daemon")));
        let stream = futures_util::stream::iter(items);
        let err = extract_artifacts_stream(stream, tmp.path().to_path_buf(), limits())
            .await
            .unwrap_err();
        let chain = crate::error::error_chain(&err);
        assert!(chain.contains("connection reset by daemon"), "{chain}");
        let ArchiveError::Malformed { extracted, .. } = err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(extracted.files, [tmp.path().join("a")]);
    }

    #[tokio::test]
    async fn endless_stream_is_abandoned() {
        let tmp = tempfile::tempdir().unwrap();
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..4].copy_from_slice(b"bomb");
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1 << 40);
        h.set_cksum();
        let head =
            futures_util::stream::iter([Ok::<_, io::Error>(Bytes::copy_from_slice(h.as_bytes()))]);
        let zeros = futures_util::stream::repeat_with(|| Ok(Bytes::from(vec![0u8; 8192])));
        let limits = ExtractLimits {
            max_total_bytes: 1 << 20,
            max_file_bytes: 1 << 10,
            max_entries: 10,
        };
        let x = tokio::time::timeout(
            Duration::from_secs(10),
            extract_artifacts_stream(head.chain(zeros), tmp.path().to_path_buf(), limits),
        )
        .await
        .expect("extraction did not stop")
        .unwrap();
        assert!(x.refused.last().unwrap().reason.contains("read budget"));
    }
}
