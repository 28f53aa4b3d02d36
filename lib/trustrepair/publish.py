"""Executed notebooks as a reader sees them, and the copies that get published.

papermill stores every message the kernel sent: one stream output per refresh of a text
progress bar, progress widgets whose stored text is the bar's first state (no frontend
drew them), and the folders of the machine the run was on. :func:`tidy_executed` rewrites
an executed notebook into what JupyterLab showed when the run ended; :func:`publish`
copies the tidied notebooks of a run to ``reports/<config>/`` with an HTML export beside
each, so the results can be read without a kernel, and :func:`publish_folder` lays a run's
staged tables and figures over ``tables/<config>/`` and ``figures/<config>/``.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbformat import NotebookNode

from trustrepair.artifacts import atomic_dir, write_text
from trustrepair.params import project_root

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
TQDM_PARTS = ["HTMLModel", "FloatProgressModel", "HTMLModel"]
"""The widgets of a tqdm bar: description and percentage, the bar, the counts."""
BAR_WIDTH = 10
"""Characters of the bar in a text progress line, as tqdm draws it in a terminal."""
TIMING_KEYS = ("start_time", "end_time", "duration")
CURSOR_UP = "\x1b[A"
TERMINAL_CONTROL = re.compile(r"(\r|\n|\x1b\[A)")
ABSOLUTE_PATH = re.compile(
    r"(\x1b\[[\d;]*m|(?<![\w.~/<>:]))(/[\w.@%+=~-]+(?:/[\w.@%+=~-]+)*/?)")
"""An absolute path in text, after a colour code or not: not a URL's, a closing HTML
tag's or a unit's (``it/s``)."""


def tidy_executed(path: Path) -> Path:
    """Rewrite an executed notebook, in place and atomically, as a reader should see it.

    Consecutive stream outputs merge, and carriage-return updates collapse to the line a
    terminal would show. Each tqdm widget becomes its last line of text, or nothing once
    closed with ``leave=False`` (a frontend hides it too); the widget state goes, since
    the notebooks use widgets for progress only. Paths of this machine in outputs become
    relative to the checkout, or ``~/...`` in the home folder.
    """
    notebook = nbformat.read(path, as_version=4)
    _tidy(notebook)
    write_text(path, nbformat.writes(notebook) + "\n")
    return Path(path)


def publish(executed_dir: Path, reports_dir: Path) -> list[Path]:
    """Copy every executed notebook of a run to ``reports_dir`` with an HTML export beside it.

    The copies are tidied (:func:`tidy_executed`) and keep their outputs but not their
    execution times, so a rerun with the same results publishes the same bytes (the run
    manifest keeps the step times). ``reports_dir`` is replaced as a whole: a reader never
    sees a half-published folder or a notebook of an earlier run. Its subfolders are other
    runs' (``seeds/``) and stay.
    """
    executed = sorted(Path(executed_dir).glob("*.ipynb"))
    if not executed:
        raise FileNotFoundError(2, "no executed notebooks to publish", str(executed_dir))
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    names = []
    with atomic_dir(Path(reports_dir)) as staging:
        for kept in Path(reports_dir).iterdir() if Path(reports_dir).is_dir() else []:
            if kept.is_dir():
                shutil.copytree(kept, staging / kept.name)
        for source in executed:
            notebook = nbformat.read(source, as_version=4)
            _tidy(notebook)
            _drop_timings(notebook)
            body, _ = exporter.from_notebook_node(notebook, resources={
                "metadata": {"name": source.stem, "path": str(source.parent)}})
            write_text(staging / source.name, nbformat.writes(notebook) + "\n")
            write_text(staging / f"{source.stem}.html", body)
            names += [source.name, f"{source.stem}.html"]
    return [Path(reports_dir) / name for name in names]


def publish_folder(staged: Path, published: Path) -> list[Path]:
    """Lay every file of ``staged`` over ``published``; returns the files published.

    A run writes its tables and figures to a staging folder and publishes them only once
    its steps are done, so an interrupted or failed run leaves the published ones as they
    were. Files of ``published`` that ``staged`` lacks stay (a step this run folder never
    ran, another run's ``seeds/``). The new folder is assembled beside the old one and
    swapped in whole.
    """
    staged, published = Path(staged), Path(published)
    files = sorted(p for p in staged.rglob("*") if p.is_file()) if staged.is_dir() else []
    if not files:
        return []
    with atomic_dir(published) as assembled:
        if published.is_dir():
            shutil.copytree(published, assembled, dirs_exist_ok=True)
        shutil.copytree(staged, assembled, dirs_exist_ok=True)
    return [published / p.relative_to(staged) for p in files]


def _tidy(notebook: NotebookNode) -> None:
    widgets = notebook.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    relative = _relative_paths(project_root())
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        outputs = [shown for output in cell.outputs for shown in _final_state(output, widgets)]
        cell.outputs = [_rewritten(output, relative) for output in _merged_streams(outputs)]
    papermill = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if isinstance(papermill.get(key), str):
            papermill[key] = relative(papermill[key])


def _final_state(output: NotebookNode, widgets: dict) -> list[NotebookNode]:
    """What an output shows once the run is over; a widget, drawn by no frontend here,
    becomes text: a tqdm bar its last line, or nothing when it was closed; any other
    widget, or one whose state was not stored, its text representation."""
    view = output.get("data", {}).get(WIDGET_VIEW)
    if view is None:
        return [output]
    box = _widget(widgets, view["model_id"])
    parts = [_widget(widgets, ref) for ref in box.get("children", [])]
    if [part.get("_model_name") for part in parts] != TQDM_PARTS:
        text = output.data.get("text/plain", "")
    elif _widget(widgets, box.get("layout", "")).get("visibility") == "hidden":
        return []
    else:
        text = _progress_line(*parts)
    return [nbformat.v4.new_output("stream", name="stdout", text=text + "\n")]


def _widget(widgets: dict, ref: str) -> dict:
    """The stored state of a widget, by model id or by ``IPY_MODEL_<id>`` reference."""
    return widgets.get(ref.removeprefix("IPY_MODEL_"), {}).get("state", {})


def _progress_line(left: dict, bar: dict, right: dict) -> str:
    """tqdm's terminal line from its widgets: ``desc: 40%|████      | 4/10 [00:02<00:03]``."""
    def text(part: dict) -> str:  # tqdm pads with figure spaces and escapes for HTML
        return html.unescape(part.get("value", "")).replace("\u2007", " ")

    if not text(left):  # no total: tqdm draws no bar
        return text(right)
    fraction = bar.get("value", 0) / bar["max"] if bar.get("max") else 1.0
    filled = min(BAR_WIDTH, int(BAR_WIDTH * fraction))
    return f"{text(left)}|{'█' * filled}{' ' * (BAR_WIDTH - filled)}|{text(right)}"


def _merged_streams(outputs: list[NotebookNode]) -> list[NotebookNode]:
    """Consecutive outputs of one stream as one, as a terminal shows them; a stream that
    shows nothing (an erased progress bar, a lone newline) goes."""
    merged: list[NotebookNode] = []
    for output in outputs:
        last = merged[-1] if merged else None
        if (output.output_type == "stream" and last is not None
                and last.output_type == "stream" and last.name == output.name):
            last.text += output.text
        else:
            merged.append(output)
    for output in merged:
        if output.output_type == "stream":
            output.text = _as_terminal_shows(output.text)
    return [o for o in merged if o.output_type != "stream" or o.text.strip()]


def _as_terminal_shows(text: str) -> str:
    """The text a terminal shows once ``text`` is written to it.

    A carriage return goes back to the start of the line, ESC[A (tqdm's nested bars) up a
    line, and later text overwrites earlier text; a line whose text was erased (a progress
    bar closed with ``leave=False``) goes.
    """
    screen, written = [""], set()
    row = col = 0
    for token in TERMINAL_CONTROL.split(text):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            if row == len(screen):
                screen.append("")
        elif token == CURSOR_UP:
            row = max(row - 1, 0)
        elif token:
            line = screen[row].ljust(col)
            screen[row] = line[:col] + token + line[col + len(token):]
            col += len(token)
            if token.strip():
                written.add(row)
    last = len(screen) - 1  # where the cursor rests: kept, even when erased
    return "\n".join(line.rstrip() for i, line in enumerate(screen)
                     if line.strip() or i not in written or i == last)


def _relative_paths(root: Path) -> Callable[[str], str]:
    """A rewrite of text that names each file or folder of this machine relative to
    ``root``, or as ``~/...`` when it lies in the home folder outside ``root``."""
    root, home = root.resolve(), Path.home()

    def shown(path: str) -> str:
        parent = os.path.dirname(path.rstrip("/"))
        if not (os.path.lexists(path) or parent != "/" and os.path.isdir(parent)):
            return path  # a slash in prose, not a path of this machine
        in_home = home != Path("/") and Path(path).is_relative_to(home)
        if in_home and not Path(path).is_relative_to(root):
            return str("~" / Path(path).relative_to(home))
        return os.path.relpath(path, root)

    return lambda text: ABSOLUTE_PATH.sub(lambda m: m[1] + shown(m[2]), text)


def _rewritten(output: NotebookNode, relative: Callable[[str], str]) -> NotebookNode:
    """``output`` with every path in its text rewritten by ``relative``."""
    if output.output_type == "stream":
        output.text = relative(output.text)
    elif output.output_type == "error":
        output.evalue = relative(output.evalue)
        output.traceback = [relative(line) for line in output.traceback]
    else:
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/") and isinstance(value, str):
                output.data[mime] = relative(value)
    return output


def _drop_timings(notebook: NotebookNode) -> None:
    """Remove execution timestamps and durations from the notebook's and cells' metadata."""
    for metadata in (notebook.metadata, *(cell.metadata for cell in notebook.cells)):
        metadata.pop("execution", None)
        for key in TIMING_KEYS:
            metadata.get("papermill", {}).pop(key, None)
