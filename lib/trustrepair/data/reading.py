"""Reading a dataset file: one sentence for a file that cannot be read, a count for every row
that cannot be used.

A loader must never shrink a dataset without a word: a damaged file (truncated lines, blanked
fields) would otherwise change every result downstream. Each loader counts the rows it finds
malformed, empty or invalid in a ``Drops`` tally, per reason, and reports it once. A file under
a published name must first be the published file (see ``published``): a copy cut at a line
break loses rows that no tally can see. Then the report is nothing when
every row was usable, a printed line up to ``WARN_FRACTION`` (a real file's odd row: the HH
mirror holds four transcripts that end in an empty assistant turn), a ``DataWarning`` above it,
and a ``DataError`` past ``MAX_UNUSABLE_FRACTION``. Rows that a loader leaves out by design (a
duplicate, a long ETHICS scenario) are not counted.
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from trustrepair.data.published import PUBLISHED, matches_published, record_tally

WARN_FRACTION = 0.01
MAX_UNUSABLE_FRACTION = 0.05
GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file that does not hold the dataset it should; the message says what to do."""


class DataWarning(UserWarning):
    """A loader left out a few unusable rows of a file it could otherwise use."""


def remedy(filename: str) -> str:
    """What to do about a bad copy of the mirror file ``filename``: the end of every error."""
    return f"replace it with {filename} from the offline data mirror (see the shared data README)"


@dataclass
class Drops:
    """Unusable rows of one source, counted by reason, against the ``rows`` it holds.

    ``source`` (a path or a hub id) is what messages name; ``filename`` is the mirror file the
    source stands for, named in the remedy. ``verify`` refuses a local file under a published
    name that is not the published file.
    """

    source: Path | str
    filename: str
    verify: bool = True
    rows: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.reasons[reason] += 1

    def report(self) -> None:
        """Say nothing, say what was dropped, warn, or fail: past ``MAX_UNUSABLE_FRACTION``
        the file is damaged or not the dataset, and results computed on what is left would not
        be the paper's. A local file that is not the published one fails first."""
        dropped = sum(self.reasons.values())
        if isinstance(self.source, Path):
            record_tally(self.source, self.rows, self.rows - dropped)
            if self.verify:
                self._check_published(self.rows - dropped)
        if not dropped:
            return
        counts = ", ".join(f"{reason}: {n:,}" for reason, n in self.reasons.most_common())
        if dropped > MAX_UNUSABLE_FRACTION * self.rows:
            raise DataError(
                f"{self.source}: {dropped:,} of {self.rows:,} rows are unusable ({counts}), more "
                f"than the {MAX_UNUSABLE_FRACTION:.0%} a loader tolerates: {remedy(self.filename)}"
            )
        message = f"{self.source}: dropped {dropped:,} of {self.rows:,} rows as unusable ({counts})"
        if dropped > WARN_FRACTION * self.rows:
            warnings.warn(message, DataWarning, stacklevel=2)
        else:
            print(message, flush=True)

    def _check_published(self, usable: int) -> None:
        path = Path(self.source)
        published = PUBLISHED.get(path.name)
        if published is None or matches_published(path):
            return
        expected = f"{published.rows:,}" + (
            "" if published.usable_rows is None else f", {published.usable_rows:,} usable")
        raise DataError(
            f"{path} is not the published {path.name} (its SHA-256 differs): it holds "
            f"{self.rows:,} rows, {usable:,} usable, where the published file holds {expected}: "
            f"{remedy(path.name)}, or set data.verify: false to read a deliberately modified copy"
        )


def open_text(path: Path, filename: str, *, newline: str | None = None) -> io.StringIO:
    """The whole UTF-8 text of ``path``, gunzipped when its name ends in ``.gz``.

    Read at once, so that an unreadable, truncated or mislabelled file fails here with one
    sentence instead of with a traceback halfway through a loader. ``newline`` is as for
    ``open``; ``filename`` is the mirror file that ``path`` stands for.
    """
    fix = remedy(filename)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}): {fix}") from err
    if not raw:
        raise DataError(f"{path} is empty: {fix}")
    if path.suffix == ".gz":
        if not raw.startswith(GZIP_MAGIC):
            raise DataError(f"{path} is not gzip-compressed although its name ends in .gz: {fix}")
        try:
            raw = gzip.decompress(raw)
        except EOFError as err:
            raise DataError(f"{path} is a truncated gzip file (its data end early): {fix}") from err
        except (gzip.BadGzipFile, zlib.error) as err:
            raise DataError(f"{path} is a damaged gzip file ({err}): {fix}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text (byte {err.start:,} is invalid): {fix}") from err
    return io.StringIO(text, newline=newline)


def require_columns(drops: Drops, found: Sequence[str], columns: Sequence[str]) -> None:
    """Fail with one sentence unless every one of ``columns`` is among ``found``."""
    missing = [name for name in columns if name not in found]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise DataError(
            f"{drops.source} has no column{'s' if len(missing) > 1 else ''} {names} "
            f"(found: {', '.join(found)}): {remedy(drops.filename)}"
        )


def read_csv(path: Path, columns: Sequence[str], drops: Drops) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV file with their positions, once its header holds ``columns``.

    A row with fewer fields than the header is counted in ``drops`` and left out, even when
    only a column the loader does not read is missing: that is how a file cut mid-line ends.
    Positions still count it, so the ids a loader derives from them do not depend on what
    was dropped.
    """
    reader = csv.DictReader(open_text(path, drops.filename, newline=""))
    try:
        if not reader.fieldnames:
            raise DataError(f"{path} has no header row: {remedy(drops.filename)}")
        require_columns(drops, reader.fieldnames, columns)
        rows = list(reader)
    except csv.Error as err:
        raise DataError(f"{path} is not a readable CSV file ({err}): "
                        f"{remedy(drops.filename)}") from err
    drops.rows = len(rows)
    kept = []
    for position, row in enumerate(rows):
        if any(value is None for value in row.values()):
            drops.drop("fewer fields than the header")
        else:
            kept.append((position, row))
    return kept


def read_hub(ds: datasets.Dataset, columns: Sequence[str], drops: Drops
             ) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a hub split with their positions, once it holds ``columns``: ``read_csv``
    for data that comes from the hub."""
    require_columns(drops, ds.column_names, columns)
    drops.rows = len(ds)
    return list(enumerate(ds))
