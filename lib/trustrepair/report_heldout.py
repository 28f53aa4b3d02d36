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
from trustrepair.heldout import METRICS, Metric, variant_rows
from trustrepair.heldout_registry import HELDOUT_BENCHMARKS
from trustrepair.params import Params
from trustrepair.report import (
    COLUMN_WIDTH_IN,
    _ablation_results,
    _finished,
    change_intervals,
    read_table,
    save_figure,
    use_paper_style,
    with_per_item_values,
    write_table,
)
from trustrepair.steps import ABLATIONS, HELDOUT, REPAIR, SFT
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
                if benchmark not in evaluated:  # a model of another aspect
                    continue
                ours = evaluated[benchmark]
                delta = ((np.nan,) * 3 if model == POST
                         else metric_change(post[benchmark], ours, benchmark, metric, bootstrap))
                rows.append({"benchmark": benchmark, "metric": metric, "model": model,
                             "value": ours["metrics"][metric], "delta": delta[0],
                             "delta_ci_low": delta[1], "delta_ci_high": delta[2],
                             "items": len(ours["ids"]), "units": len(set(ours["units"]))})
    return pd.DataFrame(rows)


def _probe_results(params: Params) -> dict[str, tuple[dict, dict[str, dict]]]:
    """Model name -> (the Post-SFT evaluation it is paired with, aspect -> its own
    evaluation on that aspect's probe): step 04's repairs (Tables 1 and 2, every test
    triple) and step 05's saved models (Table 4, its capped test triples)."""
    run = params.run_dir()
    post_path = SFT.require(run, "eval_post")
    post = with_per_item_values(read_json(post_path), post_path)
    repair_path = REPAIR.require(run, "result")
    out = {f"ours_{target}": (post, {aspect: with_per_item_values(result, repair_path)
                                     for aspect in result["aspects"]})
           for target, result in read_json(repair_path)["targets"].items()}
    ablations = ABLATIONS.output(run, "result")
    if ablations.exists():
        result, evals = _ablation_results(params)
        post05 = evals[result["post_sft"]["eval"]]
        for name, rows in variant_rows(result).items():
            out[name] = (post05, {row["aspect"]: evals[row["eval"]] for row in rows})
    return out


def _better_sign(metric: Metric, post_value: float) -> float:
    """+1 where a higher value is better, -1 where lower; towards 0 for a bias score."""
    if metric.higher_is_better is None:
        return -float(np.sign(post_value)) or 1.0
    return 1.0 if metric.higher_is_better else -1.0


def probe_vs_heldout(params: Params, evaluations: dict[str, dict],
                     bootstrap: Bootstrap) -> pd.DataFrame:
    """Per benchmark and model measured on the benchmark's aspect: ΔF_j on the probe's
    test triples and the change of the benchmark's headline metric, each with its
    interval; whether the held-out change is better beyond its interval (``transfers``:
    ``yes``, ``worse`` or ``within noise``); and each model's rank by either change
    (1 = best) among the benchmark's models."""
    rows = []
    probes = _probe_results(params)
    for benchmark, entry in HELDOUT_BENCHMARKS.items():
        if benchmark not in evaluations[POST]:
            continue
        metric = METRICS[benchmark][entry.headline]
        post_value = evaluations[POST][benchmark]["metrics"][entry.headline]
        sign = _better_sign(metric, post_value)
        for model, (post, own) in probes.items():
            if entry.aspect not in own or benchmark not in evaluations.get(model, {}):
                continue
            probe = change_intervals(post, own[entry.aspect], entry.aspect, bootstrap)
            held = metric_change(evaluations[POST][benchmark], evaluations[model][benchmark],
                                 benchmark, entry.headline, bootstrap)
            low, high = sorted((sign * held[1], sign * held[2]))
            rows.append({
                "benchmark": benchmark, "aspect": entry.aspect, "model": model,
                "delta_logodds": (own[entry.aspect]["aspects"][entry.aspect]["logodds"]
                                  - post["aspects"][entry.aspect]["logodds"]),
                "delta_logodds_ci_low": probe["delta_logodds_ci_low"],
                "delta_logodds_ci_high": probe["delta_logodds_ci_high"],
                "metric": entry.headline, "post_value": post_value, "delta": held[0],
                "delta_ci_low": held[1], "delta_ci_high": held[2],
                "transfers": "yes" if low > 0 else "worse" if high < 0 else "within noise",
                "_better": sign * held[0]})
    frame = pd.DataFrame(rows)
    if len(frame):
        by = frame.groupby("benchmark")
        frame["probe_rank"] = by["delta_logodds"].rank(method="min").astype(int)
        frame["heldout_rank"] = by["_better"].rank(ascending=False, method="min").astype(int)
    return frame.drop(columns="_better", errors="ignore")


MARKERS = "os^Dv<>pPX*hH8d"
COLOURS = (*plt.get_cmap("tab10").colors, "black", "#6a3d9a")
"""Markers and colours cycled together, so each model of a figure has its own pair and the
default's 12 models each their own colour."""


def _model_label(row: pd.Series) -> str:
    return row.model.removesuffix(f"_{row.aspect}")


def plot_probe_vs_heldout(points: pd.DataFrame) -> plt.Figure:
    """One panel per benchmark: ΔF_j on the probe (x, negative = better) against the change
    of the held-out metric (y), 95 % intervals as bars; dashed lines at no change. A model
    keeps its marker and colour in every panel, named once in a legend below them."""
    use_paper_style()
    benchmarks = list(dict.fromkeys(points["benchmark"]))
    labels = list(dict.fromkeys(points.apply(_model_label, axis=1)))
    style = {label: (MARKERS[i % len(MARKERS)], COLOURS[i % len(COLOURS)])
             for i, label in enumerate(labels)}
    fig, axes = plt.subplots(1, max(len(benchmarks), 1), squeeze=False,
                             figsize=(2 * COLUMN_WIDTH_IN, 2.3))
    handles = {}
    for ax, benchmark in zip(axes[0], benchmarks, strict=False):
        for _, row in points[points.benchmark == benchmark].iterrows():
            label = _model_label(row)
            marker, colour = style[label]
            x, y = row.delta_logodds, row.delta
            handles[label] = ax.errorbar(
                x, y, xerr=[[x - row.delta_logodds_ci_low], [row.delta_logodds_ci_high - x]],
                yerr=[[y - row.delta_ci_low], [row.delta_ci_high - y]], fmt=marker,
                color=colour, ms=4, elinewidth=0.8, capsize=2, label=label)
        ax.axhline(0, color="0.5", lw=0.8, ls="--")
        ax.axvline(0, color="0.5", lw=0.8, ls="--")
        entry = HELDOUT_BENCHMARKS[benchmark]
        ax.set(xlabel=f"ΔF ({aspect_label(entry.aspect)}, probe)",
               ylabel=f"Δ {entry.headline}", title=entry.label)
    fig = _finished(fig)
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=min(len(handles), 6),
               bbox_to_anchor=(0.5, 0.0), fontsize=6, frameon=False)
    return fig


def build_heldout_outputs(params: Params) -> list[Path]:
    """``heldout`` and ``heldout_transfer`` tables and the ``heldout`` figure, from steps
    01, 04, 05 and 08."""
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
        paths += write_table(
            points, params.tables_dir(), "heldout_transfer", float_format="%.3f",
            caption=f"{params.name}: does a change on the probe carry over? Per held-out "
                    f"benchmark and model of its aspect: delta_logodds = ΔF_j on the probe's "
                    f"test triples (ours_*: Tables 1-2, all of them; the others: Table 4, "
                    f"its capped ones), delta = change of the benchmark's headline metric; "
                    f"transfers = yes where its interval lies wholly on the better side "
                    f"(a bias score: towards 0), worse where wholly on the other; ranks: 1 = "
                    f"the best change among the benchmark's models. {note}")
        paths += save_figure(plot_probe_vs_heldout(points), params.figures_dir(), "heldout")
    return paths


TRANSFER = "heldout_transfer"
"""The table :func:`probe_vs_heldout` writes, summarised over seeds."""


def seed_transfer_summary(runs: list[Params]) -> pd.DataFrame:
    """Per benchmark and model, over the seeds' ``heldout_transfer`` tables: the mean and
    sample standard deviation of ΔF_j on the probe and of the held-out change, and in how
    many seeds the held-out change is better (``transfers_in``) or worse (``worse_in``)
    beyond its interval, which is what "transfers across seeds" means for a row."""
    every = pd.concat([read_table(p, TRANSFER) for p in runs])
    grouped = every.groupby(["benchmark", "aspect", "model", "metric"], sort=False)
    stats = grouped[["delta_logodds", "delta"]].agg(["mean", "std"])
    stats.columns = [f"{name}_{stat}" for name, stat in stats.columns]
    return stats.assign(
        transfers_in=grouped.transfers.agg(lambda t: int((t == "yes").sum())),
        worse_in=grouped.transfers.agg(lambda t: int((t == "worse").sum())),
        seeds=grouped.size()).reset_index()


def build_seed_heldout(params: Params, runs: list[Params]) -> list[Path]:
    """``tables/<name>/seeds/heldout_transfer.*``, where every seed has its own."""
    if not all((p.tables_dir() / f"{TRANSFER}.csv").exists() for p in runs):
        print(f"skipping {TRANSFER} over seeds: not every seed has it")
        return []
    seeds = ", ".join(str(p.seed) for p in runs)
    return write_table(
        seed_transfer_summary(runs), params.tables_dir() / "seeds", TRANSFER,
        float_format="%.3f",
        caption=f"{params.name}: held-out transfer over seeds {seeds}, mean ± standard "
                f"deviation of delta_logodds (ΔF_j on the probe) and delta (change of the "
                f"held-out headline metric against Post-SFT); transfers_in / worse_in: the "
                f"seeds whose interval of delta lies wholly on the better / worse side.")
