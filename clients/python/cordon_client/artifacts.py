"""Writing a job's artifacts under a destination directory, and nowhere else.

Artifact names come from the job, and the job's code is the submitter's: a name is taken only
if it is relative and every component is a plain name (no ``..``, ``.``, empty component,
absolute path or drive), and the directories under ``dest`` it goes through are opened
without following links (a link planted there refuses the download). Files are created, never
overwritten.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO, Callable, List

from .errors import UnsafeArtifactPath

_SEPARATORS = {s for s in (os.sep, os.altsep) if s and s != "/"}


def safe_parts(name: str) -> List[str]:
    """The components of artifact ``name``, or :class:`UnsafeArtifactPath` if writing it
    under a directory could land anywhere else."""

    def refuse(why: str) -> UnsafeArtifactPath:
        return UnsafeArtifactPath(f"artifact name {name!r} refused: {why}", kind="unsafe_path")

    if not name:
        raise refuse("it is empty")
    if "\x00" in name:
        raise refuse("it contains a NUL byte")
    if name.startswith("/"):
        raise refuse("it is an absolute path")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise refuse(f"component {part!r} is not a plain name (no `..`, `.` or `//`)")
        if any(s in part for s in _SEPARATORS) or (os.name == "nt" and ":" in part):
            raise refuse("it names a drive or uses this system's path separator")
    return parts


def _dir_fds_supported() -> bool:
    return os.open in os.supports_dir_fd and os.mkdir in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")


def create_under(dest: Path, name: str) -> "tuple[Path, IO[bytes]]":
    """Creates the file ``name`` under ``dest`` (and the directories on its way), refusing
    links on the way and an existing file; returns its path and an open binary writer."""
    parts = safe_parts(name)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest.joinpath(*parts)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    create = os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow | getattr(os, "O_BINARY", 0)
    if _dir_fds_supported():
        fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeArtifactPath(
                            f"artifact {name!r} refused: {dest / part} is a symbolic link or not a directory",
                            kind="unsafe_path",
                        ) from e
                    raise
                os.close(fd)
                fd = nfd
            out = os.open(parts[-1], create, 0o644, dir_fd=fd)
        finally:
            os.close(fd)
    else:  # no *at() calls here (Windows): check each directory on the way
        d = dest
        for part in parts[:-1]:
            d = d / part
            try:
                d.mkdir()
            except FileExistsError:
                pass
            if not stat.S_ISDIR(os.lstat(d).st_mode):
                raise UnsafeArtifactPath(
                    f"artifact {name!r} refused: {d} is a symbolic link or not a directory", kind="unsafe_path"
                )
        out = os.open(target, create, 0o644)
    return target, os.fdopen(out, "wb")


def write_stream(dest: Path, name: str, read: Callable[[int], bytes]) -> Path:
    """Creates ``name`` under ``dest`` and fills it from ``read`` until it returns nothing; a
    failure removes the partial file."""
    target, f = create_under(dest, name)
    try:
        with f:
            while True:
                chunk = read(1 << 16)
                if not chunk:
                    break
                f.write(chunk)
    except BaseException:
        try:
            os.unlink(target)
        except OSError:
            pass
        raise
    return target
