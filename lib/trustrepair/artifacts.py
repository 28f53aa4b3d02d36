"""Atomic artifact writes and checksums: a rerun trusts a file only if it was written
whole and has not changed since.

Each writer goes to a temporary sibling first and renames it into place, which is
atomic on one filesystem, so an interrupted step leaves either the old artifact or none.
Files kept across runs (cached models, prefix-state shards) also carry the SHA-256 they
had when written, checked before they are read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; artifacts are not
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it in for ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def is_main_process() -> bool:
    """False in every process but the first of a torchrun / accelerate launch, which
    alone writes shared artifacts."""
    return int(os.environ.get("RANK", "0")) == 0


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


GIB = 2**30


def format_size(n: int) -> str:
    """Bytes as GiB, or MiB below a tenth of one."""
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else f"{n / 2**20:.1f} MiB"


CHECKSUMS = "checksums.json"
"""File inside a saved folder listing the SHA-256 of every other file in it."""


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (models are hundreds of MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _sidecar(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".sha256")


def write_checksum(path: Path) -> None:
    """Store the digest of ``path`` beside it (``<name>.sha256``), once, after writing it."""
    write_text(_sidecar(path), file_digest(path) + "\n")


def checksum_problem(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (no stored digest, or bytes that differ), else None."""
    sidecar = _sidecar(path)
    if not sidecar.is_file():
        return "it has no stored checksum"
    if not Path(path).is_file() or file_digest(path) != sidecar.read_text().strip():
        return "its bytes differ from the checksum stored when it was written"
    return None


def discard(path: Path) -> None:
    """Remove an untrusted file and its stored digest."""
    for p in (Path(path), _sidecar(path)):
        p.unlink(missing_ok=True)


def write_folder_checksums(folder: Path) -> None:
    """List the digest of every file of a folder being written (call inside ``atomic_dir``)."""
    folder = Path(folder)
    digests = {p.relative_to(folder).as_posix(): file_digest(p)
               for p in sorted(folder.rglob("*")) if p.is_file() and p.name != CHECKSUMS}
    write_json(folder / CHECKSUMS, digests)


def folder_problem(folder: Path) -> str | None:
    """Why a saved folder cannot be trusted (a file missing, altered or truncated), else None."""
    folder = Path(folder)
    try:
        digests = read_json(folder / CHECKSUMS)
    except (OSError, ValueError):
        return f"{folder / CHECKSUMS} is missing or unreadable"
    for name, digest in digests.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if file_digest(path) != digest:
            return f"{path} differs from the checksum stored when it was written"
    return None


def describe_outputs(folder: Path, known: dict[str, dict] | None = None,
                     skip: tuple[str, ...] = ("checkpoints",)) -> dict[str, dict]:
    """Size, modification time and SHA-256 of every file under ``folder`` (not under a
    ``skip`` subfolder), keyed by relative path. A file whose size and time match ``known``
    keeps its known digest instead of being read again, as git's index does."""
    folder, known = Path(folder), known or {}
    out = {}
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        rel = path.relative_to(folder)
        if not path.is_file() or rel.parts[0] in skip or path.name.startswith("."):
            continue
        stat = path.stat()
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        seen = known.get(rel.as_posix(), {})
        same = all(seen.get(k) == v for k, v in entry.items())
        out[rel.as_posix()] = {**entry, "sha256": seen["sha256"] if same else file_digest(path)}
    return out


def outputs_problem(folder: Path, recorded: dict[str, dict]) -> str | None:
    """The first recorded output of a step that is missing or whose bytes changed, else None."""
    now = describe_outputs(folder, recorded)
    for name, entry in recorded.items():
        if name not in now:
            return f"{Path(folder) / name} is missing"
        if now[name]["sha256"] != entry["sha256"]:
            return f"{Path(folder) / name} changed since the step wrote it"
    return None


@contextlib.contextmanager
def locked(path: Path, *, holder: str, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block.

    The operating system drops the lock when its process dies, so a killed run never
    leaves a stale lock. With ``wait=False`` a held lock raises :class:`Locked`, naming
    the holder that wrote itself into the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            raise Locked(f.read().strip() or "another process") from None
        f.seek(0)
        f.truncate()
        f.write(f"{holder} (pid {os.getpid()} on {socket.gethostname()}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


class Locked(RuntimeError):
    """Another process holds the lock; the message names it."""
