"""The held-out table and figure (step 08), built from saved results only.

``tables/<config>/heldout.*``: per benchmark metric and model, its value and its change
against Post-SFT with a paired cluster-bootstrap interval (units: a BBQ template family, a
MoralChoice scenario, a TruthfulQA question). ``figures/<config>/heldout.*``: per benchmark,
each repair's change of F_j on its own probe (step 04) against its change on the held-out
benchmark of the same aspect: does a repair chosen on the probe carry over?
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trustrepair.artifacts import read_json
from trustrepair.aspects import aspect_label
from trustrepair.heldout import METRICS
from trustrepair.heldout_registry import HELDOUT_BENCHMARKS
from trustrepair.params import Params
from trustrepair.report import (
    COLUMN_WIDTH_IN,
    _finished,
    change_intervals,
    save_figure,
    use_paper_style,
    with_per_item_values,
    write_table,
)
from trustrepair.steps import HELDOUT, REPAIR, SFT
from trustrepair.uncertainty import Bootstrap, bootstrap_of, paired_bootstrap

POST = "post_sft"
"""The model every change is measured against."""


def saved_evaluations(params: Params) -> dict[str, dict]:
    """Model name -> its saved held-out evaluation: Pre-SFT, Post-SFT, then the others by
    name. Post-SFT must be there (every change is against it)."""
    run = params.run_dir()
    HELDOUT.require(run, "evaluation", name=POST)
    folder = HELDOUT.output(run, "evaluation", name=POST).parent
    names = sorted(path.stem for path in folder.glob("*.json"))
    order = [n for n in ("pre_sft", POST) if n in names] + [
        n for n in names if n not in ("pre_sft", POST)]
    return {name: read_json(folder / f"{name}.json")["benchmarks"] for name in order}


def metric_change(post: dict, ours: dict, benchmark: str, metric: str,
                  bootstrap: Bootstrap) -> tuple[float, float, float]:
    """Change of ``metric`` from Post-SFT to ``ours`` on the same items, with the interval of
    a paired bootstrap that draws the benchmark's units (``units``) with replacement."""
    if post["ids"] != ours["ids"]:
        raise ValueError(f"two evaluations score different {benchmark} items, so their "
                         f"changes cannot be paired: rerun step 08 with --force")
    compute = METRICS[benchmark][metric].compute
    p, o = np.asarray(post["values"], dtype=float), np.asarray(ours["values"], dtype=float)
    change = float(compute(o.sum(0)) - compute(p.sum(0)))
    interval = paired_bootstrap(p, o, lambda ps, os_: compute(os_) - compute(ps), bootstrap,
                                clusters=post["units"])
    return change, interval.low, interval.high


def heldout_table(evaluations: dict[str, dict], bootstrap: Bootstrap) -> pd.DataFrame:
    """One row per benchmark, metric and model: the value and, but for Post-SFT, the change
    against it (``delta``) with its interval."""
    post = evaluations[POST]
    rows = []
    for benchmark in HELDOUT_BENCHMARKS:
        if benchmark not in post:
            continue
        for metric in METRICS[benchmark]:
            for model, evaluated in evaluations.items():
                ours = evaluated[benchmark]
                delta = ((np.nan,) * 3 if model == POST
                         else metric_change(post[benchmark], ours, benchmark, metric, bootstrap))
                rows.append({"benchmark": benchmark, "metric": metric, "model": model,
                             "value": ours["metrics"][metric], "delta": delta[0],
                             "delta_ci_low": delta[1], "delta_ci_high": delta[2],
                             "items": len(ours["ids"]), "units": len(set(ours["units"]))})
    return pd.DataFrame(rows)


def probe_vs_heldout(params: Params, evaluations: dict[str, dict],
                     bootstrap: Bootstrap) -> pd.DataFrame:
    """Per benchmark and repair that was measured on the benchmark's aspect (its own
    subset, Table 1, and the common subset, Table 2): ΔF_j on the probe's test triples and
    the change of the benchmark's headline metric, each with its interval."""
    run = params.run_dir()
    post_path = SFT.require(run, "eval_post")
    post = with_per_item_values(read_json(post_path), post_path)
    repair_path = REPAIR.require(run, "result")
    targets = read_json(repair_path)["targets"]
    rows = []
    for benchmark, entry in HELDOUT_BENCHMARKS.items():
        for target in (entry.aspect, "common"):
            model = f"ours_{target}"
            if (target not in targets or entry.aspect not in targets[target]["aspects"]
                    or model not in evaluations or benchmark not in evaluations[POST]):
                continue
            ours = with_per_item_values(targets[target], repair_path)
            probe = change_intervals(post, ours, entry.aspect, bootstrap)
            held = metric_change(evaluations[POST][benchmark], evaluations[model][benchmark],
                                 benchmark, entry.headline, bootstrap)
            rows.append({
                "benchmark": benchmark, "aspect": entry.aspect, "model": model,
                "delta_logodds": (ours["aspects"][entry.aspect]["logodds"]
                                  - post["aspects"][entry.aspect]["logodds"]),
                "delta_logodds_ci_low": probe["delta_logodds_ci_low"],
                "delta_logodds_ci_high": probe["delta_logodds_ci_high"],
                "metric": entry.headline, "delta": held[0], "delta_ci_low": held[1],
                "delta_ci_high": held[2]})
    return pd.DataFrame(rows)


def plot_probe_vs_heldout(points: pd.DataFrame) -> plt.Figure:
    """One panel per benchmark: ΔF_j on the probe (x, negative = better) against the change
    of the held-out metric (y), 95 % intervals as bars; dashed lines at no change."""
    use_paper_style()
    benchmarks = list(dict.fromkeys(points["benchmark"]))
    fig, axes = plt.subplots(1, max(len(benchmarks), 1), squeeze=False,
                             figsize=(2 * COLUMN_WIDTH_IN, 2.3))
    for ax, benchmark in zip(axes[0], benchmarks, strict=False):
        frame = points[points.benchmark == benchmark]
        for marker, (_, row) in zip("os^D", frame.iterrows(), strict=False):
            x, y = row.delta_logodds, row.delta
            ax.errorbar(x, y, xerr=[[x - row.delta_logodds_ci_low],
                                    [row.delta_logodds_ci_high - x]],
                        yerr=[[y - row.delta_ci_low], [row.delta_ci_high - y]],
                        fmt=marker, capsize=2, label=row.model.removeprefix("ours_"))
        ax.axhline(0, color="0.5", lw=0.8, ls="--")
        ax.axvline(0, color="0.5", lw=0.8, ls="--")
        entry = HELDOUT_BENCHMARKS[benchmark]
        ax.set(xlabel=f"ΔF ({aspect_label(entry.aspect)}, probe)",
               ylabel=f"Δ {entry.headline}", title=entry.label)
        ax.legend(fontsize=6, title="subset", title_fontsize=6)
    return _finished(fig)


def build_heldout_outputs(params: Params) -> list[Path]:
    """``heldout`` table and figure from steps 01, 04 and 08."""
    evaluations = saved_evaluations(params)
    bootstrap = bootstrap_of(params)
    b = bootstrap
    note = (f"delta = value - Post-SFT's; brackets: {100 * b.confidence:g} % paired bootstrap "
            f"interval ({b.resamples} resamples of the benchmark's units: a BBQ category x "
            f"question_index, a MoralChoice scenario, a TruthfulQA question). Read by this "
            f"final evaluation only, never to choose anything.")
    paths = write_table(heldout_table(evaluations, bootstrap), params.tables_dir(), "heldout",
                        float_format="%.3f",
                        caption=f"{params.name}: held-out benchmarks. {note}")
    points = probe_vs_heldout(params, evaluations, bootstrap)
    if len(points):
        paths += save_figure(plot_probe_vs_heldout(points), params.figures_dir(), "heldout")
    return paths
