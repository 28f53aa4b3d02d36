"""Run the numbered notebooks in order with papermill, skipping what is up to date.

Each step's cache key hashes the notebook, the params sections it reads and the key
of the step before it, so a change anywhere upstream reruns everything downstream.
A step counts as done only when its executed notebook finished and its key was
written; an interrupted run therefore resumes at the first step that did not finish.
Steps write their tables and figures into the run folder (:data:`STAGED`); the runner
publishes them with the executed notebooks once the selected steps are all done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import papermill
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import DeadKernelError

from trustrepair.artifacts import (
    Locked,
    atomic_dir,
    describe_outputs,
    locked,
    outputs_problem,
    read_json,
    write_json,
    write_text,
)
from trustrepair.environment import environment_record
from trustrepair.params import Params, display_path, project_root
from trustrepair.publish import publish, publish_folder, tidy_executed
from trustrepair.steps import (
    MANIFEST,
    PARAMS_COPY,
    TIMINGS,
    enabled,
    find,
    fingerprint,
    reads,
)

STAGED = "staged"
"""Folder of a run where its steps write tables and figures until the run publishes them."""
PENDING = "publish_pending"
"""Manifest flag: a step ran or was copied since the run last published."""


class StepFailed(RuntimeError):
    """A notebook raised; the message points at its executed copy."""


KERNEL_GRACE_SECONDS = 10.0
"""How long a terminated kernel may take to end before it is killed."""


def notebooks(directory: Path) -> list[Path]:
    """Numbered notebooks ``NN_name.ipynb`` (or ``NNb_name.ipynb``) in run order."""
    found = sorted(Path(directory).glob("[0-9][0-9]*_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {directory}")
    return found


def step_key(params: Params, notebook: Path, upstream_key: str) -> str:
    """Hash of what a step reads: its params sections, the notebook, the upstream key."""
    digest = hashlib.sha256()
    digest.update(fingerprint(params, reads(notebook.stem)).encode())
    digest.update(notebook.read_bytes())
    digest.update(upstream_key.encode())
    return digest.hexdigest()


def step_keys(params: Params, notebook_dir: Path) -> dict[Path, str]:
    """Each notebook's key, chained in run order."""
    keys, upstream = {}, ""
    for notebook in notebooks(notebook_dir):
        keys[notebook] = upstream = step_key(params, notebook, upstream)
    return keys


def status(params: Params, notebook_dir: Path) -> dict[str, str]:
    """Per step: ``up to date``, ``disabled``, or why ``run`` would run it again (and a note
    when it was computed with other library code than this checkout's). Changes nothing."""
    manifest_path = params.run_dir() / MANIFEST
    manifest = read_json(manifest_path) if manifest_path.exists() else {"steps": {}}
    keys = step_keys(params, notebook_dir)
    out = {}
    for notebook, key in keys.items():
        step = notebook.stem
        if not enabled(step, params):
            out[step] = "disabled by these params"
            continue
        record = manifest["steps"].get(step, {})
        inputs = _upstream_outputs(manifest, keys, notebook, params)
        reason = _why_rerun(record, key, inputs, params.run_dir() / step)[0]
        out[step] = "up to date" if reason is None else f"stale: {reason}"
        if reason is None and record.get("lib") != lib_digest():
            out[step] += " (computed with other library code than this checkout's)"
    return out


def damaged_outputs(params: Params) -> dict[str, str]:
    """Per finished step of ``params``'s run whose recorded outputs are missing or altered,
    the first such file: nothing may read it, and ``run`` will recompute its step."""
    manifest_path = params.run_dir() / MANIFEST
    steps = read_json(manifest_path)["steps"] if manifest_path.exists() else {}
    out = {}
    for step, record in steps.items():
        problem = (outputs_problem(params.run_dir() / step, record.get("outputs", {}))
                   if record.get("status") == "done" else None)
        if problem is not None:
            out[step] = problem
    return out


class RunRefused(RuntimeError):
    """The run would clobber or race another run's results; the message says what to do."""


def run(params: Params, notebook_dir: Path, *, only: list[str] | None = None,
        force: bool = False, overwrite: bool = False, params_source: Path | None = None,
        reuse: Path | None = None, kernel: str = "python3",
        data_files: list[dict] | None = None) -> dict:
    """Execute the notebooks for ``params``; returns the manifest it wrote.

    A step reruns when it did not finish, when its key changed, when an earlier step's
    outputs changed since it ran, or when one of its own recorded outputs is missing or
    altered (then its saved results are recomputed, not reused). ``force`` recomputes the
    selected steps; the manifest remembers it until the step finishes, so an interrupted
    forced step is recomputed again rather than resumed from the results it was replacing.
    ``reuse`` names another run folder: a step that would run is copied from there instead
    when it finished there with the same key and the same upstream results (variants of
    a config share its SFT model this way). Only one run at a time may use a run folder.
    ``data_files`` (``RunData.provenance``) goes into the manifest as the data this run
    read; it enters no step key.
    """
    run_dir = params.run_dir()
    if reuse is not None and not (Path(reuse) / MANIFEST).exists():
        raise FileNotFoundError(f"--reuse {reuse}: no run folder there (it has no "
                                f"{MANIFEST}); name a folder under {params.paths.runs}")
    try:
        with _stopped_by_signals(), locked(run_dir / "run.lock", holder="trustrepair run",
                                           wait=False):
            return _run_locked(params, notebook_dir, only=only, force=force,
                               overwrite=overwrite, params_source=params_source,
                               reuse=reuse, kernel=kernel, data_files=data_files)
    except Locked as held:
        raise RunRefused(f"{display_path(run_dir)} is in use by {held}: wait for that run to end "
                         f"or stop it") from None


def seeded_runs(params: Params, seeds: list[int], doing: str) -> list[Params]:
    """Each seed's params (:meth:`Params.seeded`); an empty list is refused with what to
    pass, since it would silently do nothing."""
    if not seeds:
        raise ValueError(f"no seeds to {doing}: pass --seeds S ... or list them as `seeds:` "
                         f"in {params.name}'s params file")
    return [params.seeded(seed) for seed in seeds]


def run_seeds(params: Params, notebook_dir: Path, seeds: list[int], **options) -> list[Params]:
    """:func:`run` once per seed of ``seeds`` (:meth:`Params.seeded`); returns each seed's
    params. A seed's run copies every step whose key matches one of ``params``'s own run,
    if there is one, else of the first seed's: so with ``seed_scope: attribution`` SFT
    runs at most once, and the run's own seed costs nothing."""
    done: list[Params] = []
    for seeded in seeded_runs(params, seeds, "run"):
        source = (params.run_dir() if (params.run_dir() / MANIFEST).exists()
                  else done[0].run_dir() if done else None)
        print(f"== seed {seeded.seed}: {display_path(seeded.run_dir())}", flush=True)
        run(seeded, notebook_dir, reuse=source, **options)
        done.append(seeded)
    return done


def _run_locked(params: Params, notebook_dir: Path, *, only: list[str] | None, force: bool,
                overwrite: bool, params_source: Path | None, reuse: Path | None,
                kernel: str, data_files: list[dict] | None) -> dict:
    run_dir = params.run_dir()
    manifest_path = run_dir / MANIFEST
    manifest = read_json(manifest_path) if manifest_path.exists() else {"steps": {}}
    source = str(display_path(params_source)) if params_source else None
    _check_same_config(manifest, params, source, overwrite)
    staged = _staged(params)
    params_file = write_text(run_dir / PARAMS_COPY, staged.to_yaml())
    manifest.update(params=params.model_dump(mode="json"), params_file=source,
                    environment=environment_record())
    if data_files is not None:
        manifest["data_files"] = data_files
    selected = _select(notebooks(notebook_dir), only)
    keys = step_keys(params, notebook_dir)
    _check_upstream(manifest, keys, selected, params)
    rebuild = False  # a copied step's tables and figures belong to the run it came from
    for notebook, key in keys.items():
        step = notebook.stem
        if notebook not in selected:
            continue
        if not enabled(step, params):
            print(f"[{step}] not enabled by these params, skipped")
            (run_dir / "notebooks" / notebook.name).unlink(missing_ok=True)  # not this run's
            continue
        record = manifest["steps"].get(step, {})
        inputs = _upstream_outputs(manifest, keys, notebook, params)
        reason, recompute = _why_rerun(record, key, inputs, run_dir / step)
        if not force and reason is None:
            print(f"[{step}] up to date, skipped")
            continue
        if not force and reuse is not None:
            copied = _reuse_step(Path(reuse), notebook, key, inputs, run_dir)
            if copied is not None:
                manifest["steps"][step] = copied
                manifest[PENDING] = rebuild = True
                write_json(manifest_path, manifest)
                print(f"[{step}] copied from {display_path(Path(reuse))}: same settings and "
                      f"upstream results", flush=True)
                continue
        recompute = recompute or force
        print(f"[{step}] running{' (recomputing saved results)' if recompute else ''}"
              f"{'' if force else f': {reason}'} ...", flush=True)
        manifest["steps"][step] = {"key": key, "inputs": inputs, "status": "running",
                                   "recompute": recompute, "started": time.time()}
        manifest[PENDING] = True
        write_json(manifest_path, manifest)
        start = time.perf_counter()
        executed = run_dir / "notebooks" / notebook.name
        try:
            _execute(notebook, executed, params_file, recompute=recompute, kernel=kernel)
        except BaseException as err:
            interrupted = isinstance(err, KeyboardInterrupt)
            manifest["steps"][step]["status"] = "interrupted" if interrupted else "failed"
            write_json(manifest_path, manifest)
            raise _step_error(step, err, executed) from None
        seconds = time.perf_counter() - start
        outputs = describe_outputs(run_dir / step)
        manifest["steps"][step] = {
            "key": key, "inputs": inputs, "status": "done",
            "started": manifest["steps"][step]["started"], "seconds": round(seconds, 1),
            "lib": lib_digest(), "outputs": outputs, "artifacts": _named_outputs(step, outputs)}
        write_json(manifest_path, manifest)
        print(f"[{step}] done in {seconds:.0f} s", flush=True)
    if rebuild:
        from trustrepair import report  # matplotlib: only when there is something to draw

        report.build_all(staged)
    if manifest.get(PENDING):
        _publish_run(params, staged)
        del manifest[PENDING]
        write_json(manifest_path, manifest)
    return manifest


def _staged(params: Params) -> Params:
    """``params`` as the run's steps read them: tables and figures go to the run folder's
    :data:`STAGED` folder, published by :func:`_publish_run`."""
    staging = params.run_dir() / STAGED
    paths = params.paths.model_copy(update={"tables": str(staging / "tables"),
                                            "figures": str(staging / "figures")})
    return params.model_copy(update={"paths": paths})


def _publish_run(params: Params, staged: Params) -> None:
    """Publish the run's tables, figures and executed notebooks together, once its selected
    steps are done: an interrupted or failed run leaves the published ones as they were,
    and the notebooks in ``reports/`` show the tables in ``tables/``."""
    published = {params.tables_dir(): publish_folder(staged.tables_dir(), params.tables_dir()),
                 params.figures_dir(): publish_folder(staged.figures_dir(),
                                                      params.figures_dir())}
    executed = params.run_dir() / "notebooks"
    if any(executed.glob("*.ipynb")):
        published[params.reports_dir()] = publish(executed, params.reports_dir())
    for folder, files in published.items():
        if files:
            print(f"published {display_path(folder)} ({len(files)} files)", flush=True)


def _named_outputs(step: str, outputs: dict[str, dict]) -> dict[str, list[str]]:
    """Each output the step declares (:mod:`trustrepair.steps`) -> the files of it that
    it wrote; files it does not declare fall under ``undeclared``."""
    declared = find(step)
    named: dict[str, list[str]] = {}
    for path in outputs:
        artifact = declared.artifact_of(path) if declared else None
        named.setdefault(artifact or "undeclared", []).append(path)
    return named


def _reuse_step(source: Path, notebook: Path, key: str, inputs: str,
                run_dir: Path) -> dict | None:
    """Copy ``notebook``'s step from the run folder ``source`` when it finished there with
    this key and these upstream results and its outputs are intact; return its record."""
    step = notebook.stem
    record = read_json(source / MANIFEST)["steps"].get(step, {})
    if _why_rerun(record, key, inputs, source / step)[0] is not None:
        return None
    if (source / step).is_dir():  # a step may keep nothing in the run (07: only tables)
        with atomic_dir(run_dir / step) as tmp:
            shutil.copytree(source / step, tmp, dirs_exist_ok=True)
    executed = source / "notebooks" / notebook.name
    if executed.exists():
        (run_dir / "notebooks").mkdir(parents=True, exist_ok=True)
        shutil.copy2(executed, run_dir / "notebooks" / notebook.name)
    return {**record, "reused_from": str(display_path(source))}


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the runner for the block, so that
    ``kill`` ends a run as Ctrl-C does: its step marked interrupted, one line said."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; an embedding program keeps its own
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _execute(notebook: Path, executed: Path, params_file: Path, *, recompute: bool,
             kernel: str) -> None:
    """Run the notebook with papermill in a worker thread, so that a signal reaches the
    runner at once (nbclient, on the main thread, would take it to shut the kernel down
    slowly and then fail on its closed sockets); on KeyboardInterrupt the kernel is
    stopped (:func:`_stop_kernels`) and the interrupt raised again."""
    executed.parent.mkdir(parents=True, exist_ok=True)
    managers: list[AsyncKernelManager] = []
    failure: list[BaseException] = []

    class Recorded(AsyncKernelManager):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            managers.append(self)

    def execute() -> None:
        try:
            papermill.execute_notebook(
                str(notebook), str(executed),
                parameters={"params_file": str(display_path(params_file)),
                            "recompute": recompute},
                kernel_name=kernel, cwd=str(project_root()), progress_bar=False,
                log_output=True, kernel_manager_class=Recorded)
        except BaseException as err:  # handed to the main thread, which reports it
            failure.append(err)

    worker = threading.Thread(target=execute, name=f"papermill {notebook.stem}", daemon=True)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        _stop_kernels(managers, worker)
        raise
    finally:
        if executed.exists():  # also a failed one: its traceback should read as well
            tidy_executed(executed)
    if failure:
        raise failure[0]


def _stop_kernels(managers: list[AsyncKernelManager], worker: threading.Thread) -> None:
    """End each kernel's process group (SIGTERM, SIGKILL if papermill has not seen it die
    within the grace time), and wait for papermill to save the executed notebook.

    jupyter_client starts a kernel in a session of its own, so a signal to the runner alone
    never reaches it. Terminating rather than interrupting it keeps the kernel's own
    KeyboardInterrupt messages off the terminal; what a step writes is atomic or checked
    on resume, so a cell stopped midway leaves nothing that a rerun would trust.
    """
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for manager in managers:
            pgid = getattr(manager.provisioner, "pgid", None)
            if pgid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signum)
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: kill at once
            worker.join(KERNEL_GRACE_SECONDS)
        if not worker.is_alive():
            return


def _why_rerun(record: dict, key: str, inputs: str, step_dir: Path) -> tuple[str | None, bool]:
    """Why a step must run again (None if it is current), and whether its saved results
    must be recomputed rather than reused.

    A damaged output is named first, whatever else changed: its step must not read it back.
    Results computed from other upstream results are recomputed, not resumed from.
    """
    if record.get("status") != "done":
        if record.get("recompute"):
            return "a forced rerun of it did not finish", True
        return ("it has not run yet" if not record else "it did not finish"), False
    problem = outputs_problem(step_dir, record.get("outputs", {}))
    if problem is not None:
        return problem, True
    if record.get("key") != key:
        return "its settings, its notebook or an earlier step's settings changed", False
    if record.get("inputs") != inputs:
        return "an earlier step's results changed since it ran", True
    return None, False


def _upstream_outputs(manifest: dict, keys: dict[Path, str], notebook: Path,
                      params: Params) -> str:
    """Digest of the recorded outputs of every enabled step before ``notebook``, its
    :data:`~trustrepair.steps.TIMINGS` files left out."""
    digest = hashlib.sha256()
    for earlier in keys:
        if earlier == notebook:
            break
        if enabled(earlier.stem, params):
            outputs = manifest["steps"].get(earlier.stem, {}).get("outputs", {})
            hashes = sorted((name, entry["sha256"]) for name, entry in outputs.items()
                            if Path(name).name != TIMINGS)
            digest.update(json.dumps([earlier.stem, hashes]).encode())
    return digest.hexdigest()[:16]


def _step_error(step: str, err: BaseException, executed: Path) -> Exception:
    """One sentence naming the step, what happened and what to do."""
    where = f"the executed notebook is {display_path(executed)}"
    if isinstance(err, KeyboardInterrupt):
        return StepFailed(f"step {step} interrupted: run the same command again to resume it")
    if isinstance(err, DeadKernelError):
        return StepFailed(f"step {step} failed: its kernel died, most often because the system "
                          f"ran out of memory and killed it (see `trustrepair plan`); {where}")
    if isinstance(err, papermill.PapermillExecutionError):
        hint = _os_hint(err.evalue)
        return StepFailed(f"step {step} failed ({err.ename}: {err.evalue}){hint}; {where} and "
                          f"holds the traceback")
    return StepFailed(f"step {step} failed ({type(err).__name__}: {err}); {where}")


def _os_hint(message: str) -> str:
    """A fix for the operating-system errors a long run meets, from the error's text."""
    if "Read-only file system" in message or "Permission denied" in message:
        return ": a folder it writes is not writable; point paths.runs / paths.cache elsewhere"
    if "No space left on device" in message:
        return ": the disk is full; free space or point paths.runs / paths.cache elsewhere"
    return ""


def _check_same_config(manifest: dict, params: Params, source: str | None,
                       overwrite: bool) -> None:
    """Refuse a params file that reuses the ``name`` of another file's results."""
    before = manifest.get("params_file")
    if overwrite or not source or not before or before == source:
        return
    differ = _differences(manifest.get("params", {}), params.model_dump(mode="json"))
    if differ:
        listed = ", ".join(differ[:6]) + (", ..." if len(differ) > 6 else "")
        raise RunRefused(f"{display_path(params.run_dir())} holds the results of {before}, and "
                         f"{source} uses the same name '{params.name}' with other settings "
                         f"({listed}): give it its own name, or pass --overwrite to replace "
                         f"those results")


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dumps."""
    out = []
    for name in sorted(set(old) | set(new), key=str):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{name}.")
        elif a != b:
            out.append(f"{prefix}{name}")
    return out


def lib_digest() -> str:
    """Hash of the library's source, so a manifest shows which code produced a step."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


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
        if not enabled(notebook.stem, params):
            continue
        record = manifest["steps"].get(notebook.stem, {})
        inputs = _upstream_outputs(manifest, keys, notebook, params)
        if _why_rerun(record, key, inputs, params.run_dir() / notebook.stem)[0] is not None:
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
