"""Where a dataset comes from: a file of the offline mirror or its hub id.

The same params must run on a machine without network (a folder holding the mirror's files,
named by a parameter or by ``$TRUST_DATA_DIR``) and on one with hub access (no source at all).
A source that resolves to nothing fails with one sentence saying what to set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets

DATA_DIR_ENV = "TRUST_DATA_DIR"


class DataNotFoundError(FileNotFoundError):
    """A dataset that is neither on disk where it was asked for nor reachable on the hub."""


def resolve_source(
    source: str | os.PathLike | None, *, filename: str, hub_id: str | None
) -> Path | str:
    """Return the local file to read, or ``hub_id`` when the data should come from the hub.

    An existing file is used as is; a folder must hold ``filename``; ``None`` means
    ``$TRUST_DATA_DIR/filename`` when that variable is set and the hub otherwise. A source equal
    to ``hub_id`` also means the hub, so a params file may name the hub id explicitly. A
    source that leads to no file is blamed, not ``$TRUST_DATA_DIR``. A dataset with no hub
    copy (``hub_id`` None) must be a local file.
    """
    if source is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
        if not data_dir and hub_id is None:
            raise DataNotFoundError(f"{filename} has no copy on the hub: set {DATA_DIR_ENV} to "
                                    f"a folder holding it (see the shared data README)")
        if not data_dir:
            return hub_id
        path = Path(data_dir).expanduser() / filename
    elif str(source) == hub_id:
        return hub_id
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / filename
    if path.is_file():
        return path
    if source is not None:
        raise DataNotFoundError(
            f"{filename} not found at {path}, where the source given points: point it at that "
            f"file or a folder holding it, or leave it unset to read ${DATA_DIR_ENV}"
            + ("." if hub_id is None else f" or download {hub_id!r} from the hub.")
        )
    raise DataNotFoundError(
        f"{filename} not found at {path}: set {DATA_DIR_ENV} to a folder holding {filename} "
        f"(see the shared data README)"
        + ("." if hub_id is None else f" or unset it to download {hub_id!r} from the hub.")
    )


def load_hub(
    hub_id: str, config: str | None = None, *, filename: str, builder: str | None = None,
    **kwargs: Any
) -> datasets.Dataset | datasets.DatasetDict:
    """``datasets.load_dataset`` whose network failure says how to use the offline copy.

    ``filename`` is the name of the same data in the offline mirror; ``kwargs`` (split,
    data_files, ...) go to ``load_dataset`` unchanged. ``builder`` (``json``) reads the
    repo's ``data_files`` with that packaged builder instead of the repo's own loading,
    for a repo whose loading script ``datasets`` no longer runs.
    """
    path = hub_id
    if builder is not None:
        path, files = builder, kwargs.pop("data_files")
        kwargs["data_files"] = f"hf://datasets/{hub_id}/{files}"
    try:
        return datasets.load_dataset(path, config, **kwargs)
    except OSError as err:  # ConnectionError, offline mode, unknown repo: all are OSErrors
        raise DataNotFoundError(
            f"could not load {hub_id!r} from the hub ({type(err).__name__}): set {DATA_DIR_ENV} "
            f"to a folder holding {filename} (see 'Data' in the README) to work offline."
        ) from err


def at_most(data: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """A seeded random ``n`` rows of ``data``, or all of it when ``n`` is None or not smaller:
    how every sample cap (test triples, sweep triples, ablation sets) is applied."""
    if n is None or len(data) <= n:
        return data
    return data.shuffle(seed=seed).select(range(n))
