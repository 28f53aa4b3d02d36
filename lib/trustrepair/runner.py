"""Run the numbered notebooks in order with papermill, skipping what is up to date.

Each step's cache key hashes the notebook, the params sections it reads and the key
of the step before it, so a change anywhere upstream reruns everything downstream.
A step counts as done only when its executed notebook finished and its key was
written; an interrupted run therefore resumes at the first step that did not finish.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

import papermill
import yaml

from trustrepair.artifacts import read_json, write_json, write_text
from trustrepair.experiment import RECOMPUTE_ENV
from trustrepair.params import Params
from trustrepair.pipeline import ALL_SECTIONS, STEP_SECTIONS, enabled, fingerprint

PACKAGES = ("torch", "transformers", "kronfluence", "datasets", "accelerate", "papermill",
            "numpy", "matplotlib", "seaborn", "pydantic")


class StepFailed(RuntimeError):
    """A notebook raised; the message points at its executed copy."""


def notebooks(directory: Path) -> list[Path]:
    """Numbered notebooks ``NN_name.ipynb`` (or ``NNb_name.ipynb``) in run order."""
    found = sorted(Path(directory).glob("[0-9][0-9]*_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {directory}")
    return found


def step_key(params: Params, notebook: Path, upstream_key: str) -> str:
    """Hash of what a step reads: its params sections, the notebook, the upstream key."""
    digest = hashlib.sha256()
    digest.update(fingerprint(params, STEP_SECTIONS.get(notebook.stem, ALL_SECTIONS)).encode())
    digest.update(notebook.read_bytes())
    digest.update(upstream_key.encode())
    return digest.hexdigest()


def environment_record() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "git_commit": commit}


def run(params: Params, notebook_dir: Path, *, only: list[str] | None = None,
        force: bool = False, kernel: str = "python3") -> dict:
    """Execute the notebooks for ``params``; returns the manifest it wrote."""
    run_dir = params.run_dir()
    params_file = write_text(run_dir / "params.yaml",
                             yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    manifest_path = run_dir / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else {"steps": {}}
    manifest.update(params=params.model_dump(mode="json"), environment=environment_record())
    selected = _select(notebooks(notebook_dir), only)
    keys, upstream = {}, ""
    for notebook in notebooks(notebook_dir):
        keys[notebook] = upstream = step_key(params, notebook, upstream)
    _check_upstream(manifest, keys, selected, params)
    for notebook, key in keys.items():
        step = notebook.stem
        if notebook not in selected:
            continue
        if not enabled(step, params):
            print(f"[{step}] not enabled by these params, skipped")
            continue
        record = manifest["steps"].get(step, {})
        if not force and record.get("key") == key and record.get("status") == "done":
            print(f"[{step}] up to date, skipped")
            continue
        print(f"[{step}] running ...", flush=True)
        manifest["steps"][step] = {"key": key, "status": "running", "started": time.time()}
        write_json(manifest_path, manifest)
        (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        executed = run_dir / "notebooks" / notebook.name
        if force:  # the kernel inherits it: saved results of this step are recomputed
            os.environ[RECOMPUTE_ENV] = "1"
        try:
            papermill.execute_notebook(
                str(notebook), str(executed),
                parameters={"params_file": str(params_file.resolve())},
                kernel_name=kernel, cwd=str(Path.cwd()), progress_bar=False, log_output=True)
        except papermill.PapermillExecutionError as err:
            manifest["steps"][step]["status"] = "failed"
            write_json(manifest_path, manifest)
            raise StepFailed(f"step {step} failed ({err.ename}: {err.evalue}); the executed "
                             f"notebook with the traceback is {executed}") from None
        finally:
            os.environ.pop(RECOMPUTE_ENV, None)
        seconds = time.perf_counter() - start
        manifest["steps"][step].update(status="done", seconds=round(seconds, 1))
        write_json(manifest_path, manifest)
        print(f"[{step}] done in {seconds:.0f} s", flush=True)
    return manifest


def _check_upstream(manifest: dict, keys: dict[Path, str], selected: list[Path],
                    params: Params) -> None:
    """Refuse to run a step on top of an upstream step that is stale and not selected."""
    stale = None
    for notebook, key in keys.items():
        if notebook in selected:
            if stale:
                raise ValueError(f"step {notebook.stem} needs {stale}, which is not up to date "
                                 f"with these params: add it to --only, or run without --only")
            continue
        record = manifest["steps"].get(notebook.stem, {})
        if enabled(notebook.stem, params) and not (record.get("key") == key and
                                                   record.get("status") == "done"):
            stale = stale or notebook.stem


def _select(all_notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """Notebooks named by ``--only``: a step number (``02``, ``02b``) or a full stem."""
    if not only:
        return all_notebooks
    unknown = [o for o in only if not any(o in (nb.stem.split("_", 1)[0], nb.stem)
                                          for nb in all_notebooks)]
    if unknown:
        names = [nb.stem for nb in all_notebooks]
        raise ValueError(f"--only {unknown} matches none of the notebooks {names}")
    return [nb for nb in all_notebooks if nb.stem.split("_", 1)[0] in only or nb.stem in only]
