"""A workspace directory packed as the service takes it: a gzip-compressed tar of regular files
and directories, names relative, with the same excludes as ``cordon run`` / ``cordon submit``.

The archive is written to a temporary file, never held in memory, so a big tree costs disk
(its compressed size), not RAM; the upload then streams that file.

What the service would refuse is refused here first, naming the path: a symbolic link (the
service takes regular files and directories only — exclude it, or replace it with the file).
Device files, fifos and sockets are left out, as ``cordon run`` leaves them out.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, List, Sequence

from .errors import InvalidInput, UploadRefused

DEFAULT_EXCLUDES: List[str] = [
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".tox",
    "*.pyc",
]
"""Names a workspace leaves out unless the spec (or ``exclude=``) says otherwise (the same list
as src/spec/mod.rs ``DEFAULT_EXCLUDES``)."""


@dataclass(frozen=True)
class PackStats:
    files: int
    dirs: int
    bytes: int
    skipped: int
    """Device files, fifos and sockets left out."""


def glob_match(pattern: bytes, text: bytes) -> bool:
    """``*`` matches any run of bytes, ``?`` one byte, everything else is literal (the glob of
    src/sandbox/archive.rs, not :mod:`fnmatch`: no ``[...]`` classes)."""
    p = t = 0
    back = -1
    back_t = 0
    while t < len(text):
        if p < len(pattern) and pattern[p : p + 1] == b"*":
            back, back_t = p, t
            p += 1
        elif p < len(pattern) and (pattern[p : p + 1] == b"?" or pattern[p] == text[t]):
            p += 1
            t += 1
        elif back >= 0:
            back_t += 1
            p, t = back + 1, back_t
        else:
            return False
    return all(c == ord("*") for c in pattern[p:])


class Excludes:
    """Plain names and globs match any path component; a pattern with a ``/`` matches the path
    relative to the workspace root. A matching directory is left out with all below it."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.names: List[bytes] = []
        self.paths: List[bytes] = []
        for raw in patterns:
            p = raw.strip()
            if p.startswith("./"):
                p = p[2:]
            p = p.strip("/")
            if not p:
                continue
            (self.paths if "/" in p else self.names).append(os.fsencode(p))

    def matches(self, rel: str) -> bool:
        name = os.fsencode(rel.rsplit("/", 1)[-1])
        if any(glob_match(p, name) for p in self.names):
            return True
        r = os.fsencode(rel)
        return any(glob_match(p, r) for p in self.paths)


def pack(src: Path, excludes: Sequence[str], out: IO[bytes]) -> PackStats:
    """Writes ``src`` as a tar.gz to ``out``: entries sorted by name, owner 0:0, files at least
    0600 and directories 0700, as ``cordon submit`` writes them."""
    try:
        root = os.lstat(src)
    except OSError as e:
        raise InvalidInput(f"workspace {src}: {e.strerror or e}", kind="invalid_input") from e
    if not stat.S_ISDIR(root.st_mode):
        raise InvalidInput(f"workspace {src}: not a directory", kind="invalid_input")
    counts = [0, 0, 0, 0]  # files, dirs, bytes, skipped
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=1, mtime=0)
    try:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            _walk(Path(src), "", Excludes(excludes), tar, counts)
    finally:
        gz.close()
    return PackStats(files=counts[0], dirs=counts[1], bytes=counts[2], skipped=counts[3])


def _walk(root: Path, rel_dir: str, ex: Excludes, tar: tarfile.TarFile, counts: List[int]) -> None:
    here = root / rel_dir if rel_dir else root
    try:
        entries = sorted(os.scandir(here), key=lambda e: os.fsencode(e.name))
    except OSError as e:
        raise InvalidInput(
            f"workspace: cannot read {here}: {e.strerror or e}; check its permissions or exclude it",
            kind="invalid_input",
        ) from e
    for entry in entries:
        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
        if ex.matches(rel):
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise UploadRefused(
                f"workspace: {rel} is a symbolic link, and the service takes regular files and directories only: "
                "add it to the spec's `workspace.exclude` (which replaces the default list) or to exclude=, "
                "or replace it with the file",
                kind="upload_refused",
            )
        info = tarfile.TarInfo(rel)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = max(0, int(st.st_mtime))
        perm = stat.S_IMODE(st.st_mode) & 0o777
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            info.mode = perm | 0o700
            tar.addfile(info)
            counts[1] += 1
            _walk(root, rel, ex, tar, counts)
        elif stat.S_ISREG(st.st_mode):
            info.type = tarfile.REGTYPE
            info.mode = perm | 0o600
            with _open_same(Path(entry.path), st) as f:
                info.size = os.fstat(f.fileno()).st_size
                try:
                    tar.addfile(info, f)
                except OSError as e:
                    if e.errno is not None:  # the archive's own file could not be written
                        raise
                    raise InvalidInput(
                        f"workspace: {rel} shrank while it was being packed ({e}); pack a tree nothing writes to",
                        kind="invalid_input",
                    ) from e
            counts[0] += 1
            counts[2] += info.size
        else:
            counts[3] += 1


def _open_same(path: Path, seen: os.stat_result) -> IO[bytes]:
    """Opens the regular file the walk saw, without following a link swapped in meanwhile."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise InvalidInput(
            f"workspace: cannot read {path}: {e.strerror or e}; check its permissions or exclude it",
            kind="invalid_input",
        ) from e
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)
        raise InvalidInput(f"workspace: {path} was replaced while the workspace was being packed", kind="invalid_input")
    return os.fdopen(fd, "rb")
