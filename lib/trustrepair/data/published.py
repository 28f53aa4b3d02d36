"""The offline mirror's files as published, so that a damaged or edited copy is never used
silently.

A file cut mid-line, or cut in half and gzipped again, still parses: its rows just go missing,
and every result computed on the rest differs from the paper's without a word. A loader that
reads a file under one of the names of ``PUBLISHED`` compares its SHA-256 with the published
one and refuses a copy that differs (see ``Drops.report``), unless told not to (``data.verify:
false``, for a deliberately modified dataset). Files under other names are read unchecked.

The values were computed from the mirror's files: size and SHA-256 of the bytes, rows as the
loaders count them (CSV records after the header, non-blank JSON lines), and usable rows as the
package's loader tallies them (every row but those ``Drops`` counts as unusable).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PublishedFile:
    size: int
    sha256: str
    rows: int
    usable_rows: int | None = None
    """Rows the package's loader can use; None for a file that no loader reads yet."""


PUBLISHED: dict[str, PublishedFile] = {
    "hh-rlhf-harmless-base-test.jsonl.gz": PublishedFile(
        742801, "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03", 2312, 2308),
    "TruthfulQA.csv": PublishedFile(
        443719, "99d6ae7755e3b435eade956068c9de7c0c474770344237aeb66b56519ba4b697", 817, 817),
    "ethics-commonsense-cm_test.csv": PublishedFile(
        3180898, "a004f51b8f863d85eb5575d86e8723897f850fcb7fc8de38c1f30105dfb13c4d", 3885, 3885),
    "decodingtrust-stereotype-user_prompts.csv": PublishedFile(
        494438, "761687d74aecb0fb2bee946b415d68f31131bf314d16a8c0a00b670cc73f9c06", 1152, 1152),
    "decodingtrust-stereotype-system_prompts.csv": PublishedFile(
        724, "2a81124f684dda18506312d6df958f1883cb5c0815c8f9db0c9b59bc8d9cad71", 3),
    "tracing-llm-trust-antistereotypes.csv": PublishedFile(
        2513, "ed0491e989b64535c16edc8a012e342e0d832d1b8c1f446177ca54df1275888f", 48, 48),
    "bbq-Age.jsonl.gz": PublishedFile(
        81963, "db9acaf8ad39319c6b0bcc1c6d6399f7be4a8e68173caf488e6139bb1104d0e1", 3680, 3680),
    "bbq-Disability_status.jsonl.gz": PublishedFile(
        38983, "aed8a2f9bfbe216b7e697fd0597bbb00f5766fc8ee56e5858ee5810e252fc41a", 1556, 1556),
    "bbq-Nationality.jsonl.gz": PublishedFile(
        77232, "afdad7d529af71ebbea3a241b1538630c9b1d5880ec15f4321b2cc714d820906", 3080, 3080),
    "bbq-Physical_appearance.jsonl.gz": PublishedFile(
        39604, "a912a8f4d4d0eaf64f10c167ca569bc76dfa904e542d1fdb3c7426d1a3227a90", 1576, 1576),
    "bbq-Religion.jsonl.gz": PublishedFile(
        34206, "fc6a05201f0136a4f63de916450118abad26054bfb5d81beebc4f3d701c6fa48", 1200, 1200),
    "bbq-Sexual_orientation.jsonl.gz": PublishedFile(
        23992, "8dfbb9a73d65b23cdac9930a6296184360a4d3a7b0531086999584d3b0afd6e7", 864, 864),
    "moralchoice-low-ambiguity.csv": PublishedFile(
        228576, "8ae5656df6578416db16ad9e0b8e7235f4f48199d08cddd1bf632bf6aa439066", 687, 687),
}
"""Mirror file name -> the published file (see the shared data README for what each holds)."""

FileIdentity = tuple[Path, int, int]
_sha256: dict[FileIdentity, str] = {}
_tallies: dict[FileIdentity, tuple[int, int]] = {}


def _identity(path: Path) -> FileIdentity:
    """A file as this process last saw it: a file rewritten in place is a new one."""
    stat = path.stat()
    return path.resolve(), stat.st_size, stat.st_mtime_ns


def sha256_of(path: Path) -> str:
    """SHA-256 of a file's bytes, computed once per process for each path, size and mtime,
    since every loader of a run, and ``provenance``, asks for it."""
    identity = _identity(path)
    if identity not in _sha256:
        with path.open("rb") as raw:
            _sha256[identity] = hashlib.file_digest(raw, "sha256").hexdigest()
    return _sha256[identity]


def matches_published(path: Path) -> bool:
    """Whether ``path`` is byte for byte the published file of its name."""
    entry = PUBLISHED.get(path.name)
    return entry is not None and sha256_of(path) == entry.sha256


def record_tally(path: Path, rows: int, usable_rows: int) -> None:
    """Remember what a loader found in ``path``, for ``provenance``."""
    _tallies[_identity(path)] = rows, usable_rows


def provenance(path: Path) -> dict[str, Any]:
    """What a run record says about an input file: ``file``, ``size``, ``sha256``, ``rows``,
    ``usable_rows`` (as a loader of this process counted them, else as published, else None)
    and ``published`` (byte for byte the published file of its name)."""
    path = Path(path)
    entry = PUBLISHED.get(path.name) if matches_published(path) else None
    rows, usable = _tallies.get(
        _identity(path), (entry.rows, entry.usable_rows) if entry else (None, None))
    return {"file": str(path), "size": path.stat().st_size, "sha256": sha256_of(path),
            "rows": rows, "usable_rows": usable, "published": entry is not None}
