"""Executed notebooks as a reader sees them, and their published copies."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest

from trustrepair import publish

from .conftest import ROOT
from .test_pipeline import _params_file

REPORTS = ROOT / "reports"
# Each published run: reports/<config>/ and, after `make seeds`, reports/<config>/seeds/seed-<s>/,
# named by their path under reports/, which is also their tables' path under tables/.
PUBLISHED_RUNS = sorted(str(p.parent.relative_to(REPORTS)) for p in REPORTS.glob("**/01_sft.ipynb"))


@pytest.fixture(scope="module")
def executed_sft(tmp_path_factory) -> Path:
    """Notebook 01 run by papermill on the smoke params as the runner runs it, then tidied."""
    tmp = tmp_path_factory.mktemp("run")
    executed = tmp / "notebooks" / "01_sft.ipynb"
    executed.parent.mkdir()
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "01_sft.ipynb"), str(executed),
        parameters={"params_file": os.path.relpath(_params_file(tmp), ROOT)},
        kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    return publish.tidy_executed(executed)


def _texts(outputs: list) -> list[str]:
    """Every text a reader sees in ``outputs``."""
    texts = []
    for output in outputs:
        if output.output_type == "stream":
            texts.append(output.text)
        elif output.output_type == "error":
            texts += [output.evalue, *output.traceback]
        else:
            texts += [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
    return texts


def _absolute(folder: Path, text: str) -> bool:
    """Whether ``text`` names ``folder`` by its absolute path (``../../tmp/x`` does not)."""
    return re.search(r"(?<![\w.~])" + re.escape(str(folder)), text) is not None


@pytest.mark.slow
def test_an_executed_notebook_shows_its_figure_compact_progress_and_relative_paths(
        executed_sft: Path) -> None:
    cells = [c for c in nbformat.read(executed_sft, as_version=4).cells if c.cell_type == "code"]
    plot = next(c for c in cells if "report.plot_logodds_distributions" in c.source)
    assert [o.output_type for o in plot.outputs if "image/png" in o.get("data", {})] == [
        "execute_result"], "the figure shows inline, once"
    for cell in cells:
        assert len([o for o in cell.outputs if o.output_type == "stream"]) <= 4, cell.source
        assert not any(publish.WIDGET_VIEW in o.get("data", {}) for o in cell.outputs)
        for text in _texts(cell.outputs):
            assert "\r" not in text and "HBox(" not in text, text
            for folder in (executed_sft.parents[1], ROOT, Path.home()):
                assert not _absolute(folder, text), text
    sft = next(c for c in cells if "sft.run_sft" in c.source)
    assert "100%|██████████|" in "".join(_texts(sft.outputs)), "progress ends as text"
    written = next(c for c in cells if "report.build_sft_outputs" in c.source)
    assert "tables/smoke/table1_pre_post.csv" in "".join(_texts(written.outputs))


@pytest.mark.slow
def test_publish_writes_each_notebook_and_its_html_with_the_figures_inside(
        executed_sft: Path, tmp_path: Path) -> None:
    reports = tmp_path / "reports" / "smoke"
    paths = publish.publish(executed_sft.parent, reports)
    assert paths == [reports / "01_sft.ipynb", reports / "01_sft.html"]
    page = paths[1].read_text()
    assert re.search(r'<img [^>]*src="data:image/png;base64,', page), "the figure is embedded"
    for folder in (executed_sft.parents[1], ROOT, Path.home()):
        assert not _absolute(folder, page)
    notebook = nbformat.read(paths[0], as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "outputs are kept"
    assert not any("execution" in c.metadata or "start_time" in c.metadata.get("papermill", {})
                   for c in notebook.cells), "no execution times"
    first = [p.read_bytes() for p in paths]
    assert [p.read_bytes() for p in publish.publish(executed_sft.parent, reports)] == first


def test_tidying_leaves_a_terminals_last_line_and_a_progress_widgets_final_text(
        tmp_path: Path) -> None:
    def widget(model: str, **state) -> dict:
        return {"model_name": model, "state": {"_model_name": model, **state}}

    bar = {publish.WIDGET_VIEW: {"model_id": "box"},
           "text/plain": "eval:   0%|          | 0/4 [00:00<?, ?it/s]"}
    closed = {**bar, publish.WIDGET_VIEW: {"model_id": "gone"}}
    children = ["IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"]
    notebook = nbformat.v4.new_notebook(metadata={"widgets": {publish.WIDGET_STATE: {"state": {
        "box": widget("HBoxModel", children=children, layout="IPY_MODEL_shown"),
        "gone": widget("HBoxModel", children=children, layout="IPY_MODEL_hidden"),
        "left": widget("HTMLModel", value="eval:\u2007100%"),
        "bar": widget("FloatProgressModel", value=4.0, max=4.0),
        "right": widget("HTMLModel", value="\u20074/4\u2007[00:01&lt;00:00]"),
        "shown": widget("LayoutModel", visibility=None),
        "hidden": widget("LayoutModel", visibility="hidden")}}}})
    output = nbformat.v4.new_output
    notebook.cells = [nbformat.v4.new_code_cell(outputs=[
        output("stream", name="stderr", text="\rfit:  50%|#    | 1/2"),
        output("stream", name="stderr", text="\rfit: 100%|#####| 2/2\n"),
        output("stream", name="stderr", text="\rscore: 1/2\r          \r"),
        output("display_data", data=closed), output("display_data", data=bar),
        output("stream", name="stdout", text=f"read {ROOT}/params/smoke.yaml\n")])]
    path = tmp_path / "executed.ipynb"
    nbformat.write(notebook, path)
    publish.tidy_executed(path)
    tidied = nbformat.read(path, as_version=4)
    assert [(o.name, o.text) for o in tidied.cells[0].outputs] == [
        ("stderr", "fit: 100%|#####| 2/2\n"),
        ("stdout", "eval: 100%|██████████| 4/4 [00:01<00:00]\nread params/smoke.yaml\n")]
    assert "widgets" not in tidied.metadata


class _TableRows(HTMLParser):
    """The cell texts of an HTML table, row by row."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data


def _shown_equals(shown: list[list[str]], table: pd.DataFrame) -> bool:
    """Whether the rows a notebook shows (pandas' HTML, 6 decimals, index first) are rows of
    ``table`` at the index they show."""
    def same(text: str, value) -> bool:
        if isinstance(value, str):
            return text == value
        if isinstance(value, (bool, np.bool_)):  # e.g. beta_selection's `chosen`
            return text == str(bool(value))
        number = float("nan") if text in ("NaN", "<NA>", "") else float(text)
        return number == pytest.approx(float(value), rel=1e-5, abs=1e-6, nan_ok=True)

    # Each shown row carries its index in the CSV, so a filtered view checks as well; a long
    # table shows its head and tail with a row of "..." between them.
    shown = [row for row in shown if set(row) != {"..."}]
    return all(len(row) == len(table.columns) + 1 and row[0].isdigit()
               and all(map(same, row[1:], table.iloc[int(row[0])])) for row in shown)


@pytest.mark.parametrize("run", PUBLISHED_RUNS)
def test_published_notebooks_show_the_committed_tables(run: str) -> None:
    """Each table a published notebook shows is the CSV it names, or the one CSV with
    its columns: the reports and tables/ come from the same run."""
    tables = {path.stem: pd.read_csv(path) for path in (ROOT / "tables" / run).glob("*.csv")}
    checked = set()
    for path in sorted((REPORTS / run).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            named = ([a or b for a, b in re.findall(
                r'"(\w+)\.csv"|read_table\([^,()]+,\s*"(\w+)"\)', cell.source)]
                     if cell.cell_type == "code" else [])
            for output in cell.get("outputs", []):
                page = output.get("data", {}).get("text/html", "")
                if 'class="dataframe"' not in page:
                    continue
                header, *rows = _TableRows(page).rows
                stems = named or [s for s, t in tables.items() if list(t.columns) == header[1:]]
                if len(stems) == 1:
                    assert stems[0] in tables, f"{path.name} reads {stems[0]}.csv, not in tables/"
                    assert _shown_equals(rows, tables[stems[0]]), (
                        f"{path.name} shows a {stems[0]} other than tables/{run}/"
                        f"{stems[0]}.csv")
                    checked.add(stems[0])
    assert checked, f"reports/{run} shows none of the tables in tables/{run}"
    if (REPORTS / run / "04_repair.ipynb").exists():
        assert "table1" in checked, f"reports/{run}/04_repair.ipynb shows no Table 1"


# Collects no case until reports/ holds a published run: `make paper` writes it.
test_published_notebooks_show_the_committed_tables.__test__ = bool(PUBLISHED_RUNS)
