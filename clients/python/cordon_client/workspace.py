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
import re
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


MAX_PATTERN_BYTES = 1024
"""The longest exclude pattern taken (as src/spec/pattern.rs)."""


def _translate(pat: str) -> str:
    """A gitignore glob as a regular expression over a ``/``-separated path: ``*`` and ``?``
    never match ``/``, ``**`` does, ``[...]`` is a class (an unclosed ``[`` is itself), and a
    backslash quotes the next character."""
    out: List[str] = []
    i = 0
    n = len(pat)
    while i < n:
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif pat[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pat[i] == "?":
            out.append("[^/]")
            i += 1
        elif pat[i] == "\\" and i + 1 < n:
            out.append(re.escape(pat[i + 1]))
            i += 2
        elif pat[i] == "[":
            start = i + 1
            if start < n and pat[start] in "!^":
                start += 1
            if start < n and pat[start] == "]":
                start += 1
            end = pat.find("]", start)
            if end < 0:
                out.append(re.escape("["))
                i += 1
                continue
            body = pat[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pat[i]))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Rule:
    regex: "re.Pattern[str]"
    negate: bool
    dir_only: bool
    anchored: bool


class Excludes:
    """``workspace.exclude`` read as the lines of a ``.gitignore`` at the workspace's top, as
    cordon reads them (src/spec/pattern.rs): a name (``*.pyc``, ``.git``) matches at any depth;
    a ``/`` at the start or in the middle (``/build``, ``docs/*.md``, ``./dist``) makes it
    relative to the top; ``*`` never crosses ``/``, ``**`` does; a trailing ``/`` matches only
    directories; ``!pattern`` keeps a path back (not under an excluded directory, as in git);
    the last matching line wins."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.rules: List[_Rule] = []
        for raw in patterns:
            if len(raw.encode()) > MAX_PATTERN_BYTES:
                raise InvalidInput(
                    f"workspace.exclude: a pattern of {len(raw.encode())} bytes is longer than the {MAX_PATTERN_BYTES} allowed",
                    kind="invalid_input",
                )
            p = raw.strip()
            if not p or p.startswith("#"):
                continue
            negate = p.startswith("!")
            if negate:
                p = p[1:]
            if p.startswith("./"):
                p = "/" + p[2:]
            dir_only = p.endswith("/")
            p = p.rstrip("/")
            if not p:
                continue
            anchored = "/" in p
            p = p.lstrip("/")
            self.rules.append(_Rule(re.compile("^" + _translate(p) + "$", re.S), negate, dir_only, anchored))

    def matches(self, rel: str, is_dir: bool) -> bool:
        """Whether the path ``rel`` (relative to the top, ``/``-separated) is left out."""
        name = rel.rsplit("/", 1)[-1]
        excluded = False
        for r in self.rules:
            if r.dir_only and not is_dir:
                continue
            if r.regex.match(rel if r.anchored else name):
                excluded = not r.negate
        return excluded


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
        if ex.matches(rel, entry.is_dir(follow_symlinks=False)):
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
