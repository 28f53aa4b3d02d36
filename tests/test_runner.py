"""The runner's bookkeeping on a chain of two small notebooks: what reruns, what is
recomputed, and which runs it refuses."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from trustrepair import cli, data, runner
from trustrepair.artifacts import locked
from trustrepair.data.heldout import MORALCHOICE_FILENAME, bbq_filename
from trustrepair.data.trust import ANTI_STEREOTYPE_FILENAME, TRUST_FILES
from trustrepair.params import load_params

from .conftest import ROOT

KERNEL_GRACE = 8.0
"""Seconds within which a signalled run must have ended: well under the kernel's grace."""

# Step 01 writes a value (kept unless its results are recomputed) and dies when asked to;
# step 02 copies it (reusing its copy unless told to recompute). Both read only the
# parameters that the runner passes.
_WRITE = """\
import os, pathlib, signal, time
from trustrepair.params import load_params
params = load_params(params_file)
out = params.run_dir() / "01_write" / "value.txt"
if not out.exists() or recompute:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(str(time.time_ns()))
if (params.run_dir() / "die").exists():
    os.kill(os.getpid(), signal.SIGKILL)
"""
_COPY = """\
from trustrepair.params import load_params
params = load_params(params_file)
out = params.run_dir() / "02_copy" / "copy.txt"
if not out.exists() or recompute:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text((params.run_dir() / "01_write" / "value.txt").read_text())
"""


# Step 01 of another chain: a value that is the same when recomputed, and its seconds.
_RESULT = """\
import json, time
from trustrepair.params import load_params
from trustrepair.steps import TIMINGS
folder = load_params(params_file).run_dir() / "01_write"
if not (folder / "value.txt").exists() or recompute:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "value.txt").write_text("42")
    (folder / TIMINGS).write_text(json.dumps({"seconds": time.time_ns()}))
"""


def _notebook(path: Path, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('params_file = "params/smoke.yaml"\nrecompute = False',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


def _chain(folder: Path, first: str) -> Path:
    """Notebooks 01 (``first``) and 02 (:data:`_COPY`) in ``folder``."""
    folder.mkdir()
    _notebook(folder / "01_write.ipynb", first)
    _notebook(folder / "02_copy.ipynb", _COPY)
    return folder


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    return _chain(tmp_path / "notebooks", _WRITE)


@pytest.fixture
def timed_chain(tmp_path: Path) -> Path:
    return _chain(tmp_path / "timed_notebooks", _RESULT)


def _params(tmp_path: Path, file: str = "params.yaml", **sections) -> Path:
    raw = {"extends": str(ROOT / "params" / "smoke.yaml"),
           "paths": {"runs": str(tmp_path / "runs"), "tables": str(tmp_path / "tables"),
                     "figures": str(tmp_path / "figures"), "reports": str(tmp_path / "reports"),
                     "cache": str(tmp_path / "cache")},
           **sections}
    path = tmp_path / file
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(params: Path, chain: Path, *flags: str) -> int:
    return cli.main(["run", str(params), "--notebooks", str(chain), *flags])


def _value(tmp_path: Path, step: str = "01_write/value.txt") -> str:
    return (tmp_path / "runs" / "smoke" / step).read_text()


def _manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "runs" / "smoke" / "manifest.json").read_text())


def test_manifest_records_each_outputs_hash(tmp_path: Path, chain: Path) -> None:
    assert _run(_params(tmp_path), chain) == 0
    outputs = _manifest(tmp_path)["steps"]["01_write"]["outputs"]
    assert set(outputs) == {"value.txt"}
    assert len(outputs["value.txt"]["sha256"]) == 64
    assert outputs["value.txt"]["size"] == len(_value(tmp_path))


def test_manifest_records_the_data_files_read(tmp_path: Path, chain: Path) -> None:
    """Each input file with its checksum and usable rows; generated fixtures are not the
    published files."""
    assert _run(_params(tmp_path), chain) == 0
    files = _manifest(tmp_path)["data_files"]
    held_out = [bbq_filename(c) for c in load_params(_params(tmp_path)).heldout.bbq_categories]
    assert sorted(Path(f["file"]).name for f in files) == sorted(
        [data.HH_FILENAME, *(filename for filename, _hub_id in TRUST_FILES.values()),
         ANTI_STEREOTYPE_FILENAME, *held_out, MORALCHOICE_FILENAME])
    assert not any(f["published"] for f in files)
    assert all(len(f["sha256"]) == 64 and f["usable_rows"] > 0 for f in files)


def test_a_missing_or_altered_output_reruns_and_recomputes_its_step(
        tmp_path: Path, chain: Path, capsys) -> None:
    params = _params(tmp_path)
    assert _run(params, chain) == 0
    first = _value(tmp_path)
    (tmp_path / "runs" / "smoke" / "01_write" / "value.txt").unlink()
    capsys.readouterr()
    assert _run(params, chain) == 0
    out = capsys.readouterr().out
    assert "01_write/value.txt is missing" in out and "recomputing" in out
    second = _value(tmp_path)
    assert second != first
    assert _value(tmp_path, "02_copy/copy.txt") == second, "downstream reran on the new result"

    (tmp_path / "runs" / "smoke" / "01_write" / "value.txt").write_text("tampered")
    assert _run(params, chain) == 0
    assert "changed since the step wrote it" in capsys.readouterr().out
    assert _value(tmp_path) not in ("tampered", second)
    assert _value(tmp_path, "02_copy/copy.txt") == _value(tmp_path)


def test_unchanged_outputs_are_up_to_date(tmp_path: Path, chain: Path, capsys) -> None:
    params = _params(tmp_path)
    assert _run(params, chain) == 0
    capsys.readouterr()
    assert _run(params, chain) == 0
    assert capsys.readouterr().out.count("up to date, skipped") == 2


def test_a_rebuilt_step_with_the_same_results_leaves_later_steps_current(
        tmp_path: Path, timed_chain: Path, capsys) -> None:
    """Its seconds differ, but they are timings, not results."""
    params, run = _params(tmp_path), tmp_path / "runs" / "smoke"
    assert _run(params, timed_chain) == 0
    (run / "01_write" / "value.txt").unlink()
    capsys.readouterr()
    assert _run(params, timed_chain) == 0
    out = capsys.readouterr().out
    assert "[01_write] running (recomputing saved results)" in out
    assert "[02_copy] up to date, skipped" in out


def test_damaged_results_of_two_steps_are_both_recomputed(tmp_path: Path, timed_chain: Path,
                                                          capsys) -> None:
    """The later step is not resumed from its damaged file because the earlier one reran."""
    params, run = _params(tmp_path), tmp_path / "runs" / "smoke"
    assert _run(params, timed_chain) == 0
    (run / "01_write" / "value.txt").write_text("4")
    (run / "02_copy" / "copy.txt").write_text("4")
    capsys.readouterr()
    assert _run(params, timed_chain) == 0
    out = capsys.readouterr().out
    assert "02_copy/copy.txt changed since the step wrote it" in out
    assert (run / "02_copy" / "copy.txt").read_text() == "42"


def test_figures_refuse_a_damaged_result_and_name_it(tmp_path: Path, chain: Path,
                                                     capsys) -> None:
    params = _params(tmp_path)
    assert _run(params, chain) == 0
    (tmp_path / "runs" / "smoke" / "01_write" / "value.txt").write_text("truncat")
    capsys.readouterr()
    assert cli.main(["figures", str(params), "--notebooks", str(chain)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "01_write/value.txt changed since the step wrote it" in err
    assert f"run `trustrepair run {params}`" in err


def test_a_killed_kernel_names_the_step_and_a_forced_rerun_is_not_forgotten(
        tmp_path: Path, chain: Path, capsys) -> None:
    params = _params(tmp_path)
    assert _run(params, chain) == 0
    before = _value(tmp_path)
    (tmp_path / "runs" / "smoke" / "die").touch()  # as the OOM killer would, mid-step
    assert _run(params, chain, "--only", "01", "--force") == 2
    err = capsys.readouterr().err
    assert "step 01_write failed: its kernel died" in err
    record = _manifest(tmp_path)["steps"]["01_write"]
    assert record["status"] == "failed" and record["recompute"] is True
    (tmp_path / "runs" / "smoke" / "die").unlink()
    forced = _value(tmp_path)  # written by the forced run before it died
    assert _run(params, chain) == 0
    out = capsys.readouterr().out
    assert "a forced rerun of it did not finish" in out
    assert _value(tmp_path) not in (before, forced), "recomputed, not resumed from old results"
    assert _value(tmp_path, "02_copy/copy.txt") == _value(tmp_path), "02 reran on the new value"


def test_a_second_run_of_the_same_config_is_refused(tmp_path: Path, chain: Path,
                                                     capsys) -> None:
    params = _params(tmp_path)
    with locked(tmp_path / "runs" / "smoke" / "run.lock", holder="trustrepair run",
                wait=False):
        assert _run(params, chain) == 2
    err = capsys.readouterr().err
    assert "runs/smoke is in use by trustrepair run (pid" in err
    assert not (tmp_path / "runs" / "smoke" / "01_write").exists()
    assert _run(params, chain) == 0, "the lock is released when its holder ends"


def test_another_params_file_with_the_same_name_needs_overwrite(tmp_path: Path, chain: Path,
                                                                 capsys) -> None:
    assert _run(_params(tmp_path), chain) == 0
    other = _params(tmp_path, "child.yaml", sft={"epochs": 3}, selection={"k": 4})
    assert _run(other, chain) == 2
    err = capsys.readouterr().err
    assert "same name 'smoke'" in err and "selection.k" in err and "sft.epochs" in err
    assert "--overwrite" in err
    assert _run(other, chain, "--overwrite") == 0
    assert _manifest(tmp_path)["params"]["sft"]["epochs"] == 3
    edited = _params(tmp_path, "child.yaml", sft={"epochs": 4})
    assert _run(edited, chain) == 0, "editing the same file is an ordinary rerun"


@pytest.mark.parametrize("code, words", [(errno.EROFS, "cannot write here"),
                                           (errno.ENOSPC, "no space left")])
def test_a_read_only_or_full_disk_is_one_line(tmp_path: Path, chain: Path, capsys,
                                              monkeypatch, code: int, words: str) -> None:
    def refuse(path: Path, text: str) -> Path:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(runner, "write_text", refuse)  # as a read-only or full runs/ would
    assert _run(_params(tmp_path), chain) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err and "paths." in err
    assert "params.yaml" in err, "names the file it could not write"


def test_status_and_figures_tell_a_stale_step(tmp_path: Path, chain: Path, capsys) -> None:
    params = _params(tmp_path)
    assert _run(params, chain) == 0
    capsys.readouterr()
    assert cli.main(["status", str(params), "--notebooks", str(chain)]) == 0
    assert capsys.readouterr().out.count("up to date") == 2
    (tmp_path / "runs" / "smoke" / "01_write" / "value.txt").unlink()
    assert cli.main(["status", str(params), "--notebooks", str(chain)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("01_write") and "stale" in lines[0] and "missing" in lines[0]
    assert "up to date" in lines[1], "02's inputs are judged by what 01 recorded"
    assert cli.main(["figures", str(params), "--notebooks", str(chain)]) == 2
    err = capsys.readouterr().err
    assert "value.txt is missing" in err and "trustrepair run" in err
    assert cli.main(["figures", str(params), "--seeds", "3", "--notebooks", str(chain)]) == 2
    err = capsys.readouterr().err
    assert "01_write: stale" in err, "seed 3 has not run"
    assert f"`trustrepair run {params} --seeds 3` first" in err, \
        "the command to run names the seeds asked for"


def test_ctrl_c_in_a_step_is_one_line_and_marks_it(tmp_path: Path, chain: Path, capsys,
                                                   monkeypatch) -> None:
    def interrupted(*args, **kwargs) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.papermill, "execute_notebook", interrupted)
    assert _run(_params(tmp_path), chain) == 2
    assert capsys.readouterr().err.strip() == (
        "trustrepair: error: step 01_write interrupted: run the same command again to resume it")
    assert _manifest(tmp_path)["steps"]["01_write"]["status"] == "interrupted"


def test_a_complete_run_publishes_its_notebooks(tmp_path: Path, chain: Path) -> None:
    params = _params(tmp_path)
    reports = tmp_path / "reports" / "smoke"
    assert _run(params, chain, "--only", "01") == 0
    assert sorted(p.name for p in reports.iterdir()) == ["01_write.html", "01_write.ipynb"], \
        "the steps it ran"
    (reports / "seeds").mkdir()  # another run's, published into this folder
    assert _run(params, chain) == 0
    assert (reports / "seeds").is_dir(), "kept"
    (reports / "seeds").rmdir()
    assert sorted(p.name for p in reports.iterdir()) == [
        "01_write.html", "01_write.ipynb", "02_copy.html", "02_copy.ipynb"]
    published = nbformat.read(reports / "01_write.ipynb", as_version=4)
    assert published.cells[0].source == 'params_file = "params/smoke.yaml"\nrecompute = False'
    injected = published.cells[1].source
    assert f'params_file = "{tmp_path}/runs/smoke/params.yaml"' in injected
    assert "recompute = False" in injected, "a step that resumes is told so"


def test_a_variant_copies_the_steps_it_shares_with_another_run(tmp_path: Path,
                                                              capsys) -> None:
    # Named as the pipeline's steps, so that only the second reads `attribution`.
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_sft.ipynb", _WRITE.replace('"01_write"', '"01_sft"'))
    _notebook(folder / "02_attribution.ipynb", _COPY.replace('"01_write"', '"01_sft"')
              .replace('"02_copy"', '"02_attribution"'))
    assert _run(_params(tmp_path), folder) == 0
    source = tmp_path / "runs" / "smoke"
    variant = _params(tmp_path, "variant.yaml", name="variant", attribution={"damping": 0.5})
    capsys.readouterr()
    assert _run(variant, folder, "--reuse", str(source)) == 0
    out = capsys.readouterr().out
    assert "[01_sft] copied from" in out and "[02_attribution] running" in out
    copied = tmp_path / "runs" / "variant"
    assert (copied / "01_sft" / "value.txt").read_text() == (source / "01_sft" / "value.txt"
                                                             ).read_text()
    assert (copied / "notebooks" / "01_sft.ipynb").exists()
    manifest = json.loads((copied / "manifest.json").read_text())
    assert manifest["steps"]["01_sft"]["reused_from"].endswith("smoke")
    assert _run(variant, folder) == 0, "the copy is a finished step of its own run"
    assert "[01_sft] up to date" in capsys.readouterr().out

    # A step changed in the source is not copied: the variant computes its own.
    other = _params(tmp_path, "other.yaml", name="other", sft={"learning_rate": 0.123})
    assert _run(other, folder, "--reuse", str(source)) == 0
    assert "[01_sft] running" in capsys.readouterr().out
    assert _run(variant, folder, "--reuse", str(tmp_path / "nowhere")) == 2
    assert "no run folder there" in capsys.readouterr().err


def _pipeline_chain(tmp_path: Path) -> Path:
    """Two notebooks named as the pipeline's steps 01 and 02, so that only 02 reads `seed`."""
    folder = tmp_path / "notebooks"
    folder.mkdir(exist_ok=True)
    _notebook(folder / "01_sft.ipynb", _WRITE.replace('"01_write"', '"01_sft"'))
    _notebook(folder / "02_attribution.ipynb", _COPY.replace('"01_write"', '"01_sft"')
              .replace('"02_copy"', '"02_attribution"'))
    return folder


@pytest.mark.parametrize("scope", ["attribution", "all"])
def test_seeds_run_into_their_own_folders_sharing_what_they_can(tmp_path: Path, capsys,
                                                                scope: str) -> None:
    folder = _pipeline_chain(tmp_path)
    params = _params(tmp_path, seed_scope=scope)
    assert _run(params, folder) == 0
    capsys.readouterr()
    assert _run(params, folder, "--seeds", "0", "1") == 0
    out = capsys.readouterr().out
    runs = tmp_path / "runs" / "smoke"
    assert "[01_sft] copied" in out.split("== seed 1")[0], "seed 0 is the run itself"
    assert "[02_attribution] copied" in out.split("== seed 1")[0]
    seed1 = out.split("== seed 1")[1]
    if scope == "attribution":
        assert "[01_sft] copied" in seed1 and "[02_attribution] running" in seed1
        assert (runs / "seed-1" / "01_sft" / "value.txt").read_text() == \
            (runs / "01_sft" / "value.txt").read_text(), "one SFT model for every seed"
    else:
        assert "[01_sft] running" in seed1
    copy = json.loads((runs / "seed-1" / "manifest.json").read_text())["params"]
    assert (copy["seed"], copy["data"]["seed"], copy["sft"]["seed"]) == (
        1, 0, 0 if scope == "attribution" else 1)
    assert (tmp_path / "reports" / "smoke" / "seeds" / "seed-1").is_dir()


def test_figures_over_seeds_take_seeds_run_elsewhere_from_their_published_tables(
        tmp_path: Path, chain: Path, capsys) -> None:
    params = _params(tmp_path)
    tables = tmp_path / "tables" / "smoke"
    # Nothing ran here: seed 0 is the config's own published run, seed 1 ran elsewhere.
    for folder, delta in ((tables, -0.1), (tables / "seeds" / "seed-1", -0.3)):
        folder.mkdir(parents=True)
        (folder / "table4.csv").write_text(
            "aspect,method,delta_logodds,delta_logodds_ci_low,delta_logodds_ci_high,"
            f"rel_change_logodds,rel_change_ppl\ntruthfulness,ours,{delta},-0.4,-0.05,10.0,-1.0\n")
    assert cli.main(["figures", str(params), "--seeds", "0", "1", "--notebooks", str(chain)]) == 0
    out = capsys.readouterr().out
    assert "seed 0: no run folder here" in out and "seed 1: no run folder here" in out
    summary = pd.read_csv(tables / "seeds" / "table4.csv").iloc[0]
    assert (summary.delta_logodds_mean, summary.seeds, summary.better_in) == (
        pytest.approx(-0.2), 2, 2)
    # A seed that ran here is rebuilt from its run; one with neither is still to run.
    assert _run(params, chain, "--seeds", "1") == 0
    (tables / "seeds" / "seed-2").mkdir()
    capsys.readouterr()
    assert cli.main(["figures", str(params), "--seeds", "0", "1", "2",
                     "--notebooks", str(chain)]) == 2
    out, err = capsys.readouterr()
    assert "seed 1: no run folder" not in out and "seed 0: no run folder here" in out
    assert "--seeds 0 1 2` first" in err and "seed-2" in err


def test_seeds_need_a_seed(tmp_path: Path, chain: Path, capsys) -> None:
    assert _run(_params(tmp_path), chain, "--seeds") == 2
    assert "no seeds to run" in capsys.readouterr().err
    assert cli.main(["figures", str(_params(tmp_path)), "--seeds"]) == 2
    assert "no seeds to rebuild" in capsys.readouterr().err


_SLEEP = """\
import os, pathlib, time
from trustrepair.params import load_params
params = load_params(params_file)
pathlib.Path(params.run_dir() / "kernel.pid").write_text(str(os.getpid()))
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_a_signal_to_the_runner_stops_its_kernel_and_marks_the_step(tmp_path: Path,
                                                                    signum: int) -> None:
    """``kill -INT`` or ``kill -TERM`` to the runner alone, mid-cell: the kernel stops at
    once, the step is marked interrupted, and the runner says so in one line, no
    traceback."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_sleep.ipynb", _SLEEP)
    runner_process = subprocess.Popen(
        [sys.executable, "-m", "trustrepair.cli", "run", str(_params(tmp_path)), "--notebooks",
         str(folder)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})
    pid_file = tmp_path / "runs" / "smoke" / "kernel.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() and runner_process.poll() is None:
        assert time.monotonic() < deadline, "the kernel never started its cell"
        time.sleep(0.2)
    kernel = int(pid_file.read_text())
    sent = time.monotonic()
    runner_process.send_signal(signum)
    out, err = runner_process.communicate(timeout=60)
    assert time.monotonic() - sent < KERNEL_GRACE, "stopped promptly"
    assert runner_process.returncode != 0
    assert "Traceback" not in out + err and "Error:" not in err.replace("error: step", "")
    assert err.strip().splitlines()[-1] == (
        "trustrepair: error: step 01_sleep interrupted: run the same command again to resume it")
    assert _manifest(tmp_path)["steps"]["01_sleep"]["status"] == "interrupted"
    for _ in range(50):
        if not _alive(kernel):
            break
        time.sleep(0.1)
    assert not _alive(kernel), "the kernel is not left running"


_TABLE = """\
import time
from trustrepair.params import load_params
params = load_params(params_file)
for folder in (params.tables_dir(), params.figures_dir()):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "{step}.csv").write_text(str(time.time_ns()))
"""


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError], ids=["interrupted", "failed"])
def test_tables_figures_and_reports_are_published_together_or_not_at_all(
        tmp_path: Path, monkeypatch, stop: type[BaseException]) -> None:
    """Steps 01 and 02 rewrite their tables, then 03 stops: what was published stays,
    byte for byte; the next run that completes publishes all three folders."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for step in ("01_a", "02_b", "03_c"):
        _notebook(folder / f"{step}.ipynb", _TABLE.format(step=step))
    params = _params(tmp_path)
    assert _run(params, folder) == 0
    published = [tmp_path / kind / "smoke" for kind in ("tables", "figures", "reports")]

    def snapshot() -> dict[str, bytes]:
        return {str(p.relative_to(tmp_path)): p.read_bytes()
                for root in published for p in sorted(root.rglob("*")) if p.is_file()}

    before = snapshot()
    assert {"tables/smoke/01_a.csv", "figures/smoke/02_b.csv",
            "reports/smoke/03_c.ipynb"} <= set(before)
    execute = runner._execute

    def stopped_at_03(notebook: Path, *args, **kwargs) -> None:
        if notebook.stem == "03_c":
            raise stop("stopped")
        execute(notebook, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(runner, "_execute", stopped_at_03)
        assert _run(params, folder, "--force") == 2
    assert _manifest(tmp_path)["steps"]["02_b"]["status"] == "done"
    assert snapshot() == before, "an unfinished run publishes nothing"
    assert _run(params, folder) == 0
    after = snapshot()
    assert set(after) == set(before)
    changed = {name for name in after if after[name] != before[name]}
    assert {"tables/smoke/01_a.csv", "figures/smoke/02_b.csv",
            "reports/smoke/01_a.ipynb"} <= changed, "published together once complete"
    staged = tmp_path / "runs" / "smoke" / "staged" / "tables" / "smoke" / "01_a.csv"
    assert after["tables/smoke/01_a.csv"] == staged.read_bytes()
