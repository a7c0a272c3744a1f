//! An uploaded workspace: bytes as a tar.gz, through `flate2::read::GzDecoder` into
//! `cordon::sandbox::archive::extract_artifacts` with small caps, into a fresh directory.
//! After each run: nothing appeared outside that directory (its parent and grandparent hold
//! only what they held before), and inside it there are only regular files with one link and
//! directories: no symlink, hardlink, device, fifo or socket; and the caps held.
#![no_main]

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cordon::sandbox::archive::{ExtractLimits, extract_artifacts};
use libfuzzer_sys::fuzz_target;

const LIMITS: ExtractLimits = ExtractLimits {
    max_total_bytes: 256 * 1024,
    max_file_bytes: 64 * 1024,
    max_entries: 64,
};

/// `<tmp>/outer/inner/`: each run extracts into a new `inner/dest`, so an escape by `..`
/// (one or two levels) or by a link would show up as a new entry in `inner` or `outer`.
struct Dirs {
    _root: tempfile::TempDir,
    outer: PathBuf,
    inner: PathBuf,
}

fn dirs() -> &'static Dirs {
    static D: OnceLock<Dirs> = OnceLock::new();
    D.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("cordon-fuzz-targz-")
            .tempdir()
            .expect("make a temp dir");
        let outer = root.path().join("outer");
        let inner = outer.join("inner");
        std::fs::create_dir_all(&inner).expect("make the extraction parents");
        Dirs {
            _root: root,
            outer,
            inner,
        }
    })
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list a parent dir")
        .map(|e| e.expect("read a dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every entry under `dir`, not following links; panics on anything but a plain file with
/// one link or a directory. Returns (files, total file bytes).
fn walk(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    for e in std::fs::read_dir(dir).expect("list the extraction dir") {
        let e = e.expect("read a dir entry");
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).expect("stat an extracted entry");
        let ft = meta.file_type();
        if ft.is_dir() {
            let (f, b) = walk(&path);
            files += f;
            bytes += b;
        } else if ft.is_file() {
            assert_eq!(meta.nlink(), 1, "{} is a hardlink", path.display());
            assert_eq!(
                meta.mode() & 0o7000,
                0,
                "{} has setuid/setgid/sticky bits",
                path.display()
            );
            files += 1;
            bytes += meta.len();
        } else {
            panic!("{} is neither a file nor a directory: {ft:?}", path.display());
        }
    }
    (files, bytes)
}

fuzz_target!(|data: &[u8]| {
    let d = dirs();
    let dest = d.inner.join("dest");
    let outer_before = names(&d.outer);
    let inner_before = names(&d.inner);

    // As `cordon::server::upload` unpacks a workspace.
    let gz = flate2::read::GzDecoder::new(data);
    let result = extract_artifacts(gz.take(u64::MAX), &dest, &LIMITS);

    assert_eq!(names(&d.outer), outer_before, "an entry appeared beside the parent dir");
    let mut inner_after = names(&d.inner);
    inner_after.retain(|n| n != "dest");
    assert_eq!(inner_after, inner_before, "an entry appeared beside the extraction dir");

    if dest.exists() {
        let meta = std::fs::symlink_metadata(&dest).expect("stat the extraction dir");
        assert!(meta.is_dir(), "the extraction dir was replaced: {meta:?}");
        let (files, bytes) = walk(&dest);
        assert!(
            bytes <= LIMITS.max_total_bytes,
            "{bytes} bytes extracted, over the {} cap",
            LIMITS.max_total_bytes
        );
        assert!(
            files <= LIMITS.max_entries,
            "{files} files extracted, over the {} cap",
            LIMITS.max_entries
        );
        if let Ok(x) = &result {
            assert_eq!(x.files.len() as u64, files, "files reported vs on disk");
            assert_eq!(x.bytes, bytes, "bytes reported vs on disk");
            for f in &x.files {
                assert!(f.starts_with(&dest), "{} reported outside dest", f.display());
            }
        }
        std::fs::remove_dir_all(&dest).expect("remove the extraction dir");
    } else if let Ok(x) = &result {
        assert!(x.files.is_empty(), "files reported but no dir made");
    }
});
