"""Tables and figures, built from saved results only.

Nothing here trains, attributes or evaluates: every builder reads JSON that a step
wrote under ``runs/<config>/`` and writes ``tables/<config>/`` and ``figures/<config>/``,
so ``trustrepair figures`` rebuilds the paper's outputs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

from trustrepair.artifacts import atomic_path, read_json, write_text
from trustrepair.aspects import ASPECTS, aspect_label
from trustrepair.params import Params, display_path
from trustrepair.results import Subsets, is_random_draw, reported_beta
from trustrepair.steps import (
    ABLATIONS,
    ATTRIBUTION,
    HELDOUT,
    PAPER,
    PLANTED,
    REPAIR,
    SELECTION,
    SFT,
    TIMING,
)
from trustrepair.uncertainty import (
    Bootstrap,
    bootstrap_of,
    logodds_change,
    paired_bootstrap,
    perplexity_change,
    relative_change,
)

COLUMN_WIDTH_IN = 3.25
"""One column of a two-column paper."""
CHANGES = ("delta_logodds", "rel_change_logodds", "rel_change_ppl")
"""The changes against Post-SFT that Tables 1, 2, 4 and the ablations report, each with its
interval: ΔF_j = F_ours − F_post (negative = better; well-conditioned when F_post is near
0), the paper's relative change of F_j, 100 (F_post − F_ours) / |F_post| (positive =
better), and that of HH perplexity."""
INTERVAL_FORMATS = {"delta_logodds": "%+.4f", "excess_logodds": "%+.4f",
                    "rel_change_logodds": "%+.1f", "rel_change_ppl": "%+.2f", "auroc": "%.3f",
                    "delta": "%+.3f"}
"""How a value shows with its interval in Markdown and LaTeX, by the end of its column's
name; perplexity changes are about a tenth of the log-odds changes, so they keep one more
decimal, an AUROC is a level in [0, 1], not a change, a held-out metric's ``delta`` is a
change of a share or a log-odds, and the planted harm check's ``excess_logodds`` a
difference of two F_j."""


def use_paper_style() -> None:
    """One look for every figure: seaborn paper context, colour-blind-safe palette."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=0.9)
    plt.rcParams.update({"figure.dpi": 150, "savefig.bbox": "tight", "pdf.fonttype": 42})


def write_table(frame: pd.DataFrame, directory: Path, stem: str, float_format: str = "%.3f",
                caption: str = "") -> list[Path]:
    """Write one table as CSV (full precision), Markdown and LaTeX booktabs.

    A column ``x`` with ``x_ci_low`` and ``x_ci_high`` beside it shows in Markdown and
    LaTeX as one cell, ``+12.8 [+4.1, +21.0]``, and ``x_mean`` with ``x_std`` as
    ``x``: ``+12.8 ± 3.1``; the CSV keeps every column.
    """
    directory = Path(directory)
    paths = [directory / f"{stem}.{ext}" for ext in ("csv", "md", "tex")]
    write_text(paths[0], frame.to_csv(index=False))
    shown = _with_spreads(_with_intervals(frame))
    for col in shown.select_dtypes("floating").columns:
        shown[col] = shown[col].map(lambda v: float_format % v, na_action="ignore")
    shown = shown.astype(object).where(shown.notna(), "")  # a value that does not apply
    rows = [list(map(str, r)) for r in shown.itertuples(index=False)]
    write_text(paths[1], "\n".join(_markdown(list(shown.columns), rows)) + "\n")
    write_text(paths[2], _booktabs(shown, caption))
    return paths


def _with_intervals(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each value that has an interval merged with it into one text cell (left
    empty where the value does not apply)."""
    shown = frame.copy()
    for col in frame.columns:
        low, high = f"{col}_ci_low", f"{col}_ci_high"
        if low in frame.columns and high in frame.columns:
            fmt = _format_of(col)
            shown[col] = [None if pd.isna(v) else f"{fmt % v} [{fmt % lo}, {fmt % hi}]"
                          for v, lo, hi in zip(frame[col], frame[low], frame[high], strict=True)]
            shown = shown.drop(columns=[low, high])
    return shown


def _with_spreads(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each ``x_mean`` and its ``x_std`` merged into one cell ``x``; a std
    that does not exist (one seed) leaves the mean alone."""
    shown = frame.copy()
    for col in frame.columns:
        name = col.removesuffix("_mean")
        std = f"{name}_std"
        if name != col and std in frame.columns:
            fmt = _format_of(name)
            shown[col] = [fmt % m if pd.isna(s) else f"{fmt % m} ± {fmt.replace('+', '') % s}"
                          for m, s in zip(frame[col], frame[std], strict=True)]
            shown = shown.drop(columns=[std]).rename(columns={col: name})
    return shown


def _format_of(column: str) -> str:
    return next((f for end, f in INTERVAL_FORMATS.items() if column.endswith(end)), "%+.1f")


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def _booktabs(frame: pd.DataFrame, caption: str) -> str:
    def esc(s: str) -> str:
        return str(s).replace("_", r"\_").replace("%", r"\%")

    align = "l" + "r" * (len(frame.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{esc(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
              " & ".join(esc(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def read_table(params: Params, stem: str) -> pd.DataFrame:
    """The table ``stem`` that a ``build_*_outputs`` call wrote, at full precision."""
    path = params.tables_dir() / f"{stem}.csv"
    if not path.exists():
        raise FileNotFoundError(2, f"no table {stem!r} at {display_path(path)}: run the step "
                                   f"that writes it, or `trustrepair figures`", str(path))
    return pd.read_csv(path)


def figure_file(params: Params, stem: str) -> Path:
    """The PNG of figure ``stem`` that a ``build_*_outputs`` call wrote."""
    return params.figures_dir() / f"{stem}.png"


def save_figure(fig: plt.Figure, directory: Path, stem: str) -> list[Path]:
    """Save a figure as PDF and PNG, atomically and byte-for-byte reproducibly."""
    paths = []
    for ext in ("pdf", "png"):
        path = Path(directory) / f"{stem}.{ext}"
        with atomic_path(path) as tmp:  # no creation date: a rebuild leaves the bytes as they were
            fig.savefig(tmp, format=ext,
                        metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(path)
    return paths


def _finished(fig: plt.Figure) -> plt.Figure:
    """Lay ``fig`` out and take it off pyplot's list of open figures. A notebook cell that
    returns it then shows it once (the inline backend would show every open figure a
    second time), and figures built one after another are not all kept in memory."""
    fig.tight_layout()
    plt.close(fig)
    return fig


def table1_pre_post(pre: dict, post: dict) -> pd.DataFrame:
    """Pre-/Post-SFT columns of the paper's Table 1 (log-odds F_j and HH perplexity)."""
    rows = [{"aspect": aspect,
             "pre_sft_logodds": pre["aspects"][aspect]["logodds"],
             "post_sft_logodds": post["aspects"][aspect]["logodds"],
             "pre_sft_ppl": pre["ppl"], "post_sft_ppl": post["ppl"]}
            for aspect in _aspects(pre)]
    return pd.DataFrame(rows)


def _aspects(result: dict) -> list[str]:
    """Aspects of a saved result in the paper's order."""
    return [a for a in ASPECTS if a in result["aspects"]]


def plot_logodds_distributions(pre: dict, post: dict) -> plt.Figure:
    """Per-triple log-odds before and after SFT, one panel per aspect."""
    use_paper_style()
    frame = pd.DataFrame([
        {"aspect": aspect_label(a), "model": label, "log-odds": v}
        for label, result in (("Pre-SFT", pre), ("Post-SFT", post))
        for a in _aspects(result) for v in result["aspects"][a]["per_triple"]])
    aspects = list(dict.fromkeys(frame["aspect"]))
    fig, axes = plt.subplots(1, len(aspects), figsize=(2 * COLUMN_WIDTH_IN, 1.9), squeeze=False)
    for ax, aspect in zip(axes[0], aspects, strict=True):
        sns.violinplot(data=frame[frame["aspect"] == aspect], x="model", y="log-odds",
                       hue="model", ax=ax, cut=0, inner="quartile", legend=False)
        ax.axhline(0, color="0.3", lw=0.8, ls="--")
        ax.set(title=aspect, xlabel="", ylabel="log P(o|m) − log P(p|m)" if ax is axes[0][0]
               else "")
    return _finished(fig)


def build_sft_outputs(params: Params) -> list[Path]:
    """Table 1 (Pre/Post-SFT) and the log-odds distribution figure from step 01's results."""
    run = params.run_dir()
    pre, post = (read_json(SFT.require(run, "eval_pre")), read_json(SFT.require(run, "eval_post")))
    norm = "length-normalised" if post.get("length_normalized", True) else "summed"
    caption = (f"{params.name}: trust log-odds F_j ({norm}, lower is better) on each aspect's "
               f"test split and token-weighted perplexity on the HH test split "
               f"({post['ppl_samples']} dialogues).")
    paths = write_table(table1_pre_post(pre, post), params.tables_dir(), "table1_pre_post",
                        caption=caption)
    paths += save_figure(plot_logodds_distributions(pre, post), params.figures_dir(),
                         "logodds_pre_post")
    return paths


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    if not Path(path).exists():
        raise FileNotFoundError(2, "missing", str(path))
    return load_file(str(path))


def plot_score_histograms(scores: dict) -> plt.Figure:
    """Distribution of detrimental scores per aspect (right tail = most harmful samples)."""
    use_paper_style()
    aspects = [a for a in ASPECTS if a in scores]
    fig, axes = plt.subplots(1, len(aspects), figsize=(2 * COLUMN_WIDTH_IN, 1.8), squeeze=False)
    for ax, aspect in zip(axes[0], aspects, strict=True):
        sns.histplot(scores[aspect].double().numpy(), bins=40, ax=ax)
        ax.axvline(0, color="0.3", lw=0.8, ls="--")
        ax.set(title=aspect_label(aspect), xlabel="detrimental score",
               ylabel="SFT samples" if ax is axes[0][0] else "")
    return _finished(fig)


def topk_overlap(scores: dict, k: int) -> pd.DataFrame:
    """Jaccard overlap of the k most detrimental samples between every pair of targets."""
    tops = {name: set(v.argsort(descending=True)[:k].tolist()) for name, v in scores.items()}
    names = [a for a in (*ASPECTS, "common") if a in tops]
    return pd.DataFrame([{"target": a, **{b: len(tops[a] & tops[b]) / len(tops[a] | tops[b])
                                          for b in names}} for a in names])


def build_attribution_outputs(params: Params) -> list[Path]:
    """Score histograms and top-k overlap from step 02's saved scores."""
    scores = _load_safetensors(ATTRIBUTION.require(params.run_dir(), "scores"))
    k = min(params.selection.k, len(next(iter(scores.values()))))
    paths = write_table(topk_overlap(scores, k), params.tables_dir(), "topk_overlap",
                        caption=f"Jaccard overlap of the top-{k} detrimental SFT samples.")
    paths += save_figure(plot_score_histograms(scores), params.figures_dir(), "attribution_scores")
    return paths


def plot_selection_pca(features, scores, picks: dict[str, list[int]], title: str) -> plt.Figure:
    """Features projected on 2 principal components, coloured by score, with each pick."""
    import torch

    use_paper_style()
    centred = features.double() - features.double().mean(0)
    # Exact SVD with a fixed sign per axis: the same picture on every rebuild
    # (torch.pca_lowrank is randomised).
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2].T
    axes *= torch.sign(axes.gather(0, axes.abs().argmax(0, keepdim=True)))
    xy = (centred @ axes).numpy()
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.6))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=scores.double().numpy(), s=4, cmap="viridis",
                        alpha=0.6, linewidths=0)
    dpp, topk = picks["dpp"], picks["topk"]
    ax.scatter(xy[dpp, 0], xy[dpp, 1], s=24, facecolors="none", edgecolors="C3", linewidths=0.9,
               label="DPP")
    ax.scatter(xy[topk, 0], xy[topk, 1], s=18, marker="x", color="k", linewidths=0.8,
               label="top-k")
    fig.colorbar(points, ax=ax, label="detrimental score")
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    ax.legend(loc="best", frameon=True)
    return _finished(fig)


def build_selection_outputs(params: Params) -> list[Path]:
    """PCA picture of the DPP vs top-k picks for every target, from steps 02 and 03."""
    run = params.run_dir()
    subsets = Subsets.load(run)
    scores = _load_safetensors(ATTRIBUTION.require(run, "scores"))
    features = _load_safetensors(ATTRIBUTION.require(run, "features"))["features"]
    paths = []
    for target, indices in subsets.indices.items():
        label = aspect_label(target) if target in ASPECTS else "All aspects (common)"
        fig = plot_selection_pca(features, scores[target], indices, label)
        paths += save_figure(fig, params.figures_dir(), f"selection_pca_{target}")
    return paths


def plot_roc(roc: dict) -> plt.Figure:
    """ROC curves of planted-sample recovery, one panel per aspect, one line per method."""
    use_paper_style()
    aspects = [a for a in ASPECTS if a in next(iter(roc.values()))]
    fig, axes = plt.subplots(1, len(aspects), figsize=(2 * COLUMN_WIDTH_IN, 2.0), squeeze=False,
                             sharey=True)
    for ax, aspect in zip(axes[0], aspects, strict=True):
        for method, curves in roc.items():
            fpr, tpr = curves[aspect]
            ax.plot(fpr, tpr, label=method, lw=1.2)
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.6, ls=":")
        ax.set(title=aspect_label(aspect), xlabel="false-positive rate",
               ylabel="true-positive rate" if ax is axes[0][0] else "")
    axes[0][-1].legend(loc="lower right", fontsize=6)
    return _finished(fig)


def planted_recovery(params: Params) -> dict:
    """Step 02b's saved recovery results, once they are known to carry AUROC intervals."""
    path = PLANTED.require(params.run_dir(), "recovery")
    result = read_json(path)
    if any("auroc_ci_low" not in row for row in result["table"]):
        raise ValueError(f"{display_path(path)} has no AUROC intervals: it was saved before "
                         f"they were recorded, so recompute it with `trustrepair run PARAMS "
                         f"--only 02b --force`")
    return result


def build_planted_outputs(params: Params) -> list[Path]:
    """Planted-harm recovery and harm-check tables and the ROC figure from step 02b."""
    result = planted_recovery(params)
    caption = (f"Recovery of {result['k']} planted harmful SFT dialogues per aspect: AUROC "
               f"[95% interval] and precision@{result['k']} of each method's ranking.")
    table = pd.DataFrame(result["table"])[["method", "aspect", "auroc", "auroc_ci_low",
                                           "auroc_ci_high", "precision_at_k"]]
    paths = write_table(table, params.tables_dir(), "planted_recovery", caption=caption)
    caption = ("Do the planted dialogues harm the attribution queries? F_j on an aspect's "
               "queries after a short fine-tune on its planted dialogues minus after one on "
               "ordinary SFT dialogues [95% interval]; recovery is meaningful where harmful.")
    harm = pd.DataFrame(result["harm"])[["aspect", "planted", "control", "excess_logodds",
                                         "excess_logodds_ci_low", "excess_logodds_ci_high",
                                         "harmful"]]
    paths += write_table(harm, params.tables_dir(), "planted_harm", caption=caption)
    paths += save_figure(plot_roc(result["roc"]), params.figures_dir(), "planted_roc")
    return paths


def attribution_grid_table(cells: list[Params],
                           methods: tuple[str, ...] = ("ekfac", "gradient_dot")) -> pd.DataFrame:
    """Planted-harm recovery of runs that differ in their attribution settings: one row per
    (loss, damping, method), with AUROC [interval] and precision@k per aspect."""
    rows = []
    for params in cells:
        damping = params.attribution.damping
        for method in methods:
            row = {"loss": params.attribution.loss_reduction,
                   "damping": "heuristic" if damping is None else f"{damping:g}",
                   "method": method}
            for entry in planted_recovery(params)["table"]:
                if entry["method"] == method:
                    aspect = entry["aspect"]
                    row |= {f"{aspect}_auroc": entry["auroc"],
                            f"{aspect}_auroc_ci_low": entry["auroc_ci_low"],
                            f"{aspect}_auroc_ci_high": entry["auroc_ci_high"],
                            f"{aspect}_p_at_k": entry["precision_at_k"]}
            rows.append(row)
    return pd.DataFrame(rows).sort_values(["method", "loss", "damping"], ignore_index=True)


def with_per_item_values(result: dict, path: Path) -> dict:
    """``result`` (an evaluation saved at ``path``) once it is known to hold the per-item
    values the confidence intervals are resampled from; else one sentence saying what to do."""
    missing = [key for key in ("ppl_ids", "ppl_nll", "ppl_tokens") if key not in result]
    missing += [f"{aspect} {key}" for aspect, r in result["aspects"].items()
                for key in ("per_triple", "groups") if key not in r or "ids" not in r]
    if missing:
        raise ValueError(f"{display_path(path)} lacks {', '.join(missing)}, the per-item values "
                         f"and units that confidence intervals are computed from: it was saved "
                         f"before they were recorded, so recompute the run with `trustrepair "
                         f"run PARAMS --force`")
    return result


def change_intervals(post: dict, ours: dict, aspect: str, bootstrap: Bootstrap) -> dict:
    """Paired-bootstrap intervals of Ours against Post on the same items: ΔF_j of
    ``aspect`` (``delta_logodds``), its relative change and that of HH perplexity
    (the paper's 100 · (Post − Ours) / |Post|), as ``*_ci_low`` / ``*_ci_high`` values.
    Triples are drawn by their units (``groups``), HH dialogues one by one."""
    p, o = post["aspects"][aspect], ours["aspects"][aspect]
    if p["ids"] != o["ids"] or post["ppl_ids"] != ours["ppl_ids"]:
        raise ValueError(f"the two evaluations score different {aspect} triples or HH "
                         f"dialogues, so their changes cannot be paired: recompute the run")
    delta, logodds = logodds_change(p["per_triple"], o["per_triple"], bootstrap, p["groups"])
    ppl = perplexity_change(post["ppl_nll"], post["ppl_tokens"], ours["ppl_nll"],
                            ours["ppl_tokens"], bootstrap)
    return {f"{name}_ci_{end}": getattr(interval, end)
            for name, interval in (("delta_logodds", delta), ("rel_change_logodds", logodds),
                                   ("rel_change_ppl", ppl))
            for end in ("low", "high")}


def _rel_changes(values: dict, intervals: dict) -> dict:
    """Each change of ``values`` (:data:`CHANGES`) followed by its interval."""
    columns = {}
    for name in CHANGES:
        columns[name] = values[name]
        for end in ("low", "high"):
            columns[f"{name}_ci_{end}"] = intervals[f"{name}_ci_{end}"]
    return columns


def repair_table(pre: dict, post: dict, repaired: dict[str, dict],
                 bootstrap: Bootstrap) -> pd.DataFrame:
    """Table 1 / Table 2 rows: per aspect, the model repaired for it (``repaired[aspect]``),
    each relative change with its paired-bootstrap interval (:func:`change_intervals`)."""
    rows = []
    for aspect in _aspects(post):
        if aspect not in repaired:
            continue
        ours = repaired[aspect]
        before, after = post["aspects"][aspect]["logodds"], ours["aspects"][aspect]["logodds"]
        changes = {"delta_logodds": after - before,
                   "rel_change_logodds": relative_change(before, after),
                   "rel_change_ppl": relative_change(post["ppl"], ours["ppl"])}
        rows.append({
            "aspect": aspect, "pre_sft_logodds": pre["aspects"][aspect]["logodds"],
            "post_sft_logodds": post["aspects"][aspect]["logodds"],
            "ours_logodds": ours["aspects"][aspect]["logodds"],
            "pre_sft_ppl": pre["ppl"], "post_sft_ppl": post["ppl"], "ours_ppl": ours["ppl"],
            **_rel_changes(changes, change_intervals(post, ours, aspect, bootstrap))})
    return pd.DataFrame(rows)


_CHANGES = ("delta_logodds = F_ours - F_post (negative = better); rel_change_* = "
            "100 (Post - Ours) / |Post| in % (positive = better).")
"""How a caption defines the change columns."""


def _interval_note(params: Params) -> str:
    """Caption sentences saying what the changes and the bracketed intervals are."""
    b = bootstrap_of(params)
    bias_unit = ("a bias topic for one target group" if params.data.trust.bias_split == "group"
                 else "a bias template")
    return (f" {_CHANGES}"
            f" Brackets: {100 * b.confidence:g} % paired bootstrap interval ({b.resamples} "
            f"resamples, the same for both models, of the HH test dialogues and of the units "
            f"of test triples that share sentences: a question, an ethics pair, {bias_unit}).")


def plot_predicted_vs_actual(sweep: pd.DataFrame) -> plt.Figure:
    """Measured vs eq. 6-predicted change of F_j across β, one colour per aspect."""
    use_paper_style()
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.6))
    frame = sweep.assign(aspect=sweep["aspect"].map(aspect_label))
    sns.scatterplot(data=frame, x="predicted_change", y="measured_change", hue="aspect",
                    size="beta", ax=ax)
    low = min(frame.predicted_change.min(), frame.measured_change.min())
    high = max(frame.predicted_change.max(), frame.measured_change.max())
    ax.plot([low, high], [low, high], color="0.5", lw=0.8, ls="--")
    rho = frame[["predicted_change", "measured_change"]].corr(method="spearman").iloc[0, 1]
    ax.set(xlabel="predicted ΔF (eq. 6)", ylabel="measured ΔF", title=f"Spearman ρ = {rho:.2f}")
    ax.legend(fontsize=6)
    return _finished(fig)


def build_repair_outputs(params: Params) -> list[Path]:
    """Tables 1 and 2 and the predicted-vs-actual figure from steps 01 and 04."""
    run = params.run_dir()
    post_path, repair_path = SFT.require(run, "eval_post"), REPAIR.require(run, "result")
    pre, post = read_json(SFT.require(run, "eval_pre")), read_json(post_path)
    with_per_item_values(post, post_path)
    result = read_json(repair_path)
    targets = {target: with_per_item_values(evaluated, repair_path)
               for target, evaluated in result["targets"].items()}
    setting = f"β = {result['beta']}, {result['selector']} subsets"
    bootstrap = bootstrap_of(params)
    note = _interval_note(params)
    paths = write_table(repair_table(pre, post, targets, bootstrap), params.tables_dir(), "table1",
                        caption=f"{params.name}: Pre-SFT, Post-SFT and repaired (ours, {setting}, "
                                f"one subset per aspect). Relative change 100(Post-Ours)/|Post|."
                                f"{note}")
    common = {aspect: targets["common"] for aspect in targets["common"]["aspects"]}
    paths += write_table(repair_table(pre, post, common, bootstrap), params.tables_dir(),
                         "table2", caption=f"{params.name}: repair with one common subset for "
                                           f"all aspects ({setting}).{note}")
    sweep = pd.DataFrame(result["sweep"])[["aspect", "beta", "predicted_change",
                                           "measured_change"]]
    paths += write_table(sweep, params.tables_dir(), "predicted_vs_actual", float_format="%.5f")
    paths += save_figure(plot_predicted_vs_actual(sweep), params.figures_dir(),
                         "predicted_vs_actual")
    paths += build_beta_selection_outputs(params)
    return paths


def beta_choice(result: dict) -> str:
    """One sentence: which β step 04 repaired with, and why (``repair.json``)."""
    selection = result.get("beta_selection")
    if selection is None:
        return f"β = {result['beta']:g}, fixed by repair.beta (no selection)."
    grid = ", ".join(f"{b:g}" for b in selection["beta_grid"])
    limit = f"{selection['max_ppl_increase']:g} %"
    if selection["within_limit"]:
        return (f"β = {selection['beta']:g}: the largest of [{grid}] whose HH validation "
                f"perplexity rises by at most {limit} over Post-SFT for every repair target.")
    return (f"β = {selection['beta']:g}, the smallest of [{grid}]: no β keeps the HH validation "
            f"perplexity rise within {limit} over Post-SFT for every repair target.")


def beta_selection_table(selection: dict) -> pd.DataFrame:
    """The validation curve β was chosen on: per target, β and aspect, F_j and HH
    perplexity on validation data against Post-SFT, and the chosen β."""
    post = selection["post_sft"]
    return pd.DataFrame([{
        "target": row["target"], "beta": row["beta"], "aspect": row["aspect"],
        "val_logodds": row["logodds"],
        "rel_change_logodds": relative_change(post["logodds"][row["aspect"]], row["logodds"]),
        "val_ppl": row["ppl"], "ppl_increase_pct": row["ppl_increase"],
        "chosen": row["beta"] == selection["beta"]} for row in selection["curve"]])


def build_beta_selection_outputs(params: Params) -> list[Path]:
    """``beta_selection`` table from step 04's saved curve (none when β is fixed)."""
    result = read_json(REPAIR.require(params.run_dir(), "result"))
    selection = result.get("beta_selection")
    if selection is None:
        return []
    sizes = ", ".join(f"{n} {aspect}" for aspect, n in selection["n_triples"].items())
    caption = (f"{params.name}: {beta_choice(result)} F_j on each target's validation triples "
               f"({sizes}; the common subset on every aspect), perplexity on "
               f"{selection['ppl_dialogues']} HH validation dialogues. rel_change_logodds = "
               f"100(Post-Ours)/|Post|, ppl_increase_pct = 100(Ours-Post)/Post.")
    return write_table(beta_selection_table(selection), params.tables_dir(), "beta_selection",
                       float_format="%.4g", caption=caption)


def paper_vs_ours(ours_table1: pd.DataFrame, ours_table2: pd.DataFrame | None,
                  ours_table4: pd.DataFrame | None, *, model_label: str, scale_note: str) -> str:
    """Markdown setting our Tables 1, 2 and 4 beside the paper's, which used larger models;
    aspects the paper does not measure are named and left out."""
    from trustrepair.reported import TABLE1, TABLE2, TABLE4

    def span(values: pd.Series) -> str:
        return f"{values.min():+.1f} .. {values.max():+.1f}"

    unreported = [a for a in ours_table1.aspect if a not in set(TABLE1.aspect)]
    ours_table1, ours_table2, ours_table4 = (
        None if table is None else table[table.aspect.isin(TABLE1.aspect)]
        for table in (ours_table1, ours_table2, ours_table4))
    lines = [f"# Paper vs ours ({model_label})", "", scale_note, "",
             "Relative changes in %, 100 · (Post − Ours) / |Post|: positive = lower = better. "
             "`paper` columns are the paper's (min .. max over its six models, or its named "
             "row), the rest ours."
             + (f" The paper does not measure {', '.join(map(aspect_label, unreported))}."
                if unreported else ""),
             "", "## Table 1 (one subset per aspect)", ""]
    pythia = TABLE1[TABLE1.model == "Pythia-1.4B"].set_index("aspect")
    rows = [[aspect_label(r.aspect), span(TABLE1[TABLE1.aspect == r.aspect].rel_change_logodds),
             span(TABLE1[TABLE1.aspect == r.aspect].rel_change_ppl),
             f"{pythia.post_sft_logodds[r.aspect]:.3f}", f"{pythia.ours_logodds[r.aspect]:.3f}",
             f"{r.post_sft_logodds:.3f}", f"{r.ours_logodds:.3f}", f"{r.rel_change_logodds:+.2f}",
             f"{r.rel_change_ppl:+.2f}"] for r in ours_table1.itertuples(index=False)]
    lines += _markdown(["aspect", "paper rel_change_logodds", "paper rel_change_ppl",
                        "paper Pythia-1.4B post_sft_logodds", "paper Pythia-1.4B ours_logodds",
                        "post_sft_logodds", "ours_logodds", "rel_change_logodds",
                        "rel_change_ppl"], rows)
    if ours_table2 is not None:
        paper = TABLE2.pivot(index="aspect", columns="model", values="rel_change_logodds")
        models = list(dict.fromkeys(TABLE2.model))
        rows = [[aspect_label(a), *(f"{paper.loc[a, m]:+.2f}" for m in models), f"{v:+.2f}"]
                for a, v in zip(ours_table2.aspect, ours_table2.rel_change_logodds, strict=True)]
        ppl = TABLE2.groupby("model", sort=False).rel_change_ppl.first()
        # one common subset, so one repaired model and one perplexity
        rows.append(["Perplexity", *(f"{ppl[m]:+.2f}" for m in models),
                     f"{ours_table2.rel_change_ppl.iloc[0]:+.2f}"])
        lines += ["", "## Table 2 (one common subset, relative change %)", "",
                  *_markdown(["aspect", *(f"paper {m}" for m in models), model_label], rows)]
    if ours_table4 is not None:
        rows = []
        for r in ours_table4.itertuples(index=False):
            paper = TABLE4[(TABLE4.aspect == r.aspect) & (TABLE4.method == r.method)]
            rows.append([aspect_label(r.aspect), r.method, span(paper.rel_change_logodds),
                         span(paper.rel_change_ppl), f"{r.rel_change_logodds:+.2f}",
                         f"{r.rel_change_ppl:+.2f}"])
        lines += ["", "## Table 4 (random subset vs ours)", "",
                  *_markdown(["aspect", "method", "paper rel_change_logodds",
                              "paper rel_change_ppl", "rel_change_logodds", "rel_change_ppl"],
                             rows)]
    return "\n".join(lines) + "\n"


def plot_figure2(grid: pd.DataFrame, post: dict) -> plt.Figure:
    """Figure 2: F_j (top) and perplexity (bottom) across β, DPP subset vs plain top-k.

    With ``*_ci_low`` / ``*_ci_high`` columns (:func:`figure2_grid`), each line gets a band:
    the Post-SFT value moved by the paired-bootstrap interval of the change, so a band
    that crosses the dashed Post-SFT line marks a change within the noise of the test set.
    """
    use_paper_style()
    aspects = [a for a in ASPECTS if a in set(grid["aspect"])]
    fig, axes = plt.subplots(2, len(aspects), figsize=(2 * COLUMN_WIDTH_IN, 3.2), squeeze=False,
                             sharex=True)
    labels = {"dpp": "with DPP", "topk": "without DPP (top-k)"}
    banded = {"logodds_ci_low", "ppl_ci_low"} <= set(grid.columns)
    for col, aspect in enumerate(aspects):
        rows = grid[grid["aspect"] == aspect]
        for selector, label in labels.items():
            line = rows[rows["selector"] == selector].sort_values("beta")
            for row, quantity in enumerate(("logodds", "ppl")):
                ax = axes[row][col]
                drawn = ax.plot(line["beta"], line[quantity], marker="o", ms=3, label=label)[0]
                if banded:
                    ax.fill_between(line["beta"], line[f"{quantity}_ci_low"],
                                    line[f"{quantity}_ci_high"], color=drawn.get_color(),
                                    alpha=0.2, lw=0)
        for row, reference in ((0, post["logodds"][aspect]), (1, post["ppl"])):
            axes[row][col].axhline(reference, color="0.4", lw=0.8, ls="--", label="Post-SFT")
        axes[0][col].set(title=aspect_label(aspect), ylabel="log-odds $F_j$" if col == 0 else "")
        betas = sorted(set(rows["beta"]))
        axes[1][col].set(xlabel="β", xscale="log", ylabel="HH perplexity" if col == 0 else "")
        axes[1][col].set_xticks(betas, [f"{b:g}" for b in betas], rotation=45)
        axes[1][col].minorticks_off()
    handles = axes[0][-1].get_legend_handles_labels()[0]
    if banded:
        handles.append(Patch(facecolor="0.5", alpha=0.3, label="paired bootstrap interval"))
    axes[0][-1].legend(handles=handles, fontsize=6)
    return _finished(fig)


def _ablation_results(params: Params) -> tuple[dict, dict[str, dict]]:
    """Step 05's ``ablations.json`` and every evaluation it names, by name, each checked
    for the per-item values the confidence intervals are computed from."""
    path = ABLATIONS.require(params.run_dir(), "result")
    step = ABLATIONS.folder(params.run_dir())
    result = read_json(path)
    if "eval" not in result["post_sft"]:
        raise ValueError(f"{display_path(path)} does not name the evaluation behind each row, "
                         f"whose per-item values confidence intervals are computed from: it was "
                         f"saved before they were recorded, so recompute the run with "
                         f"`trustrepair run PARAMS --force`")
    names = {result["post_sft"]["eval"], *(r["eval"] for r in (*result["rows"], *result["grid"]))}
    return result, {name: with_per_item_values(read_json(step / name), step / name)
                    for name in sorted(names)}


def figure2_grid(params: Params) -> pd.DataFrame:
    """Figure 2's points (step 05's β grid) with bands: F_j and perplexity of Post-SFT
    moved by the paired-bootstrap intervals of ΔF_j and of the relative perplexity change."""
    result, evals = _ablation_results(params)
    post, bootstrap = evals[result["post_sft"]["eval"]], bootstrap_of(params)
    points = []
    for point in result["grid"]:
        aspect = point["aspect"]
        iv = change_intervals(post, evals[point["eval"]], aspect, bootstrap)
        post_logodds, post_ppl = post["aspects"][aspect]["logodds"], post["ppl"]
        points.append({
            **{k: point[k] for k in ("aspect", "selector", "beta", "logodds", "ppl")},
            "logodds_ci_low": post_logodds + iv["delta_logodds_ci_low"],
            "logodds_ci_high": post_logodds + iv["delta_logodds_ci_high"],
            # relative change r = 100 (Post - Ours) / Post, so Ours = Post (1 - r / 100)
            "ppl_ci_low": post_ppl * (1 - iv["rel_change_ppl_ci_high"] / 100),
            "ppl_ci_high": post_ppl * (1 - iv["rel_change_ppl_ci_low"] / 100)})
    return pd.DataFrame(points)


def mean_change_intervals(post: dict, models: list[dict], aspect: str,
                          bootstrap: Bootstrap) -> dict:
    """Paired-bootstrap intervals of the mean over ``models`` (evaluations of the same items,
    e.g. random draws) of ΔF_j on ``aspect`` and of the relative changes of F_j and of HH
    perplexity:
    each resample draws the items (triples by their units) once for Post-SFT and every
    model, with the resamples of :func:`change_intervals`, which it equals for one model."""
    triples = post["aspects"][aspect]
    if any(m["aspects"][aspect]["ids"] != triples["ids"] or m["ppl_ids"] != post["ppl_ids"]
           for m in models):
        raise ValueError(f"the evaluations score different {aspect} triples or HH dialogues, "
                         f"so their changes cannot be paired: recompute the run")
    count, units = len(models), triples["groups"]
    # The last column counts the resampled triples, which varies when units are drawn.
    ones = np.ones((len(units), 1))
    post_items = np.hstack([np.tile(np.asarray(triples["per_triple"], dtype=np.float64)[:, None],
                                    count), ones])
    model_items = np.hstack([np.column_stack([m["aspects"][aspect]["per_triple"]
                                              for m in models]), ones])

    def means(sums: np.ndarray) -> np.ndarray:  # [resamples, F_j per model]
        return sums[:, :-1] / sums[:, -1:]

    delta = paired_bootstrap(post_items, model_items,
                             lambda p, o: (means(o) - means(p)).mean(axis=1), bootstrap, units)
    logodds = paired_bootstrap(
        post_items, model_items,
        lambda p, o: relative_change(means(p), means(o)).mean(axis=1), bootstrap, units)

    def perplexities(sums: np.ndarray) -> np.ndarray:  # [resamples, (nll, tokens) per model]
        return np.exp(sums[:, 0::2] / sums[:, 1::2])

    ppl = paired_bootstrap(
        np.tile(np.column_stack([post["ppl_nll"], post["ppl_tokens"]]), count),
        np.column_stack([c for m in models for c in (m["ppl_nll"], m["ppl_tokens"])]),
        lambda p, o: relative_change(perplexities(p), perplexities(o)).mean(axis=1), bootstrap)
    return {f"{name}_ci_{end}": getattr(interval, end)
            for name, interval in (("delta_logodds", delta), ("rel_change_logodds", logodds),
                                   ("rel_change_ppl", ppl))
            for end in ("low", "high")}


def ablation_table(result: dict, evals: dict[str, dict], bootstrap: Bootstrap) -> pd.DataFrame:
    """Every row of step 05 (``ablations.json``, with the evaluations it names) as relative
    changes against Post-SFT with paired-bootstrap intervals, grouped by aspect.

    The random draws (``random_draws``) are summarised, before their own rows, in one
    ``random`` row per aspect: the mean of their changes, the interval of that mean
    (:func:`mean_change_intervals`) and the draws' sample standard deviation (``*_std``
    columns, empty in every other row).
    """
    post = evals[result["post_sft"]["eval"]]
    saved = [{**row, "delta_logodds": row["logodds"] - post["aspects"][row["aspect"]]["logodds"]}
             for row in result["rows"]]
    rows = {(row["aspect"], row["method"]): {
        "aspect": row["aspect"], "method": row["method"], "setting": row.get("setting", ""),
        **_rel_changes(row, change_intervals(post, evals[row["eval"]], row["aspect"],
                                             bootstrap))} for row in saved}
    aspects = list(dict.fromkeys(row["aspect"] for row in saved))
    methods = list(dict.fromkeys(row["method"] for row in saved))
    draws = [m for m in result.get("random_draws", []) if m in methods]
    if draws:
        methods.insert(methods.index(draws[0]), "random")
        for aspect in aspects:
            drawn = [row for row in saved
                     if row["aspect"] == aspect and row["method"] in draws]
            changes = pd.DataFrame(drawn)[list(CHANGES)]
            rows[aspect, "random"] = {
                "aspect": aspect, "method": "random", "setting": drawn[0].get("setting", ""),
                **_rel_changes(changes.mean().to_dict(), mean_change_intervals(
                    post, [evals[row["eval"]] for row in drawn], aspect, bootstrap)),
                **{f"{name}_std": changes[name].std() for name in CHANGES}}
    table = pd.DataFrame([rows[a, m] for a in aspects for m in methods if (a, m) in rows])
    columns = [c for name in CHANGES
               for c in (name, f"{name}_ci_low", f"{name}_ci_high", f"{name}_std")]
    return table.reindex(columns=["aspect", "method", "setting", *columns])


RANKERS = {"hidden_cosine": "hidden-state cosine to the aspect's opponent texts",
           "gradient_dot": "the plain gradient dot product (EK-FAC without its preconditioner)"}
"""What each of step 05's cheaper rankers scores, for the captions."""


def _ablation_legend(result: dict, methods: set[str]) -> str:
    """Caption sentences saying what the rows beyond the paper's ablation are."""
    k, draws = result.get("k"), result.get("random_draws", [])
    parts = []
    if draws:
        parts.append(f"random: mean of the PBRF step on {len(draws)} random subsets "
                     f"({', '.join(draws)}), *_std their standard deviation.")
    parts += [f"{m}: the same step on the {k} SFT samples ranked most detrimental by "
              f"{what}." for m, what in RANKERS.items() if m in methods]
    if "retrain_random" in methods:
        parts.append(f"retrain_random: SFT rerun without {k} random SFT samples, the control "
                     f"for retrain (without the common subset).")
    return "".join(f" {part}" for part in parts)


def build_ablation_outputs(params: Params) -> list[Path]:
    """Table 4, the table of every method and Figure 2 from step 05, every change with
    its paired-bootstrap interval against the Post-SFT evaluation of step 05."""
    result, evals = _ablation_results(params)
    rows = ablation_table(result, evals, bootstrap_of(params))
    sizes = ", ".join(f"{n} {aspect}" for aspect, n in result["n_triples"].items())
    setting = (f"β = {result['beta']}; {sizes} test triples, {result['ppl_dialogues']} HH test "
               f"dialogues")
    note = _interval_note(params)
    table4 = rows[rows["method"].isin(["random", "ours"])].reset_index(drop=True)
    paths = write_table(table4, params.tables_dir(), "table4",
                        caption=f"{params.name}: PBRF repair with a random subset of the same "
                                f"size vs ours, relative change (%) against Post-SFT ({setting})."
                                f"{_ablation_legend(result, {'random'})}{note}")
    paths += write_table(rows, params.tables_dir(), "ablations",
                         caption=f"{params.name}: every method against Post-SFT, relative change "
                                 f"(%) ({setting})."
                                 f"{_ablation_legend(result, set(rows['method']))}{note}")
    paths += save_figure(plot_figure2(figure2_grid(params), result["post_sft"]),
                         params.figures_dir(), "figure2")
    if result.get("tradeoff"):
        points = tradeoff_table(result)
        paths += write_table(points, params.tables_dir(), "tradeoff", float_format="%.4g",
                             caption=f"{params.name}: every point of the validation trade-off, "
                                     f"relative change (%) against Post-SFT on the validation "
                                     f"splits; matched: the point each table row reports.")
        paths += save_figure(plot_tradeoff(points), params.figures_dir(), "tradeoff")
    return paths


def tradeoff_table(result: dict) -> pd.DataFrame:
    """Step 05's validation trade-off points, each marked when the tables report it: the
    repair at the reported β, each baseline at its matched (lr, steps)."""
    points = pd.DataFrame(result["tradeoff"]).reindex(
        columns=["aspect", "method", "beta", "lr", "steps", "rel_change_logodds",
                 "rel_change_ppl"])
    chosen = [p["beta"] == result["beta"] if p["method"] == "ours" else
              result["matched"][p["aspect"]][p["method"]] == {"lr": p["lr"], "steps": p["steps"]}
              for p in result["tradeoff"]]
    points["steps"] = points["steps"].astype("Int64")
    return points.assign(matched=chosen)


def plot_tradeoff(points: pd.DataFrame) -> plt.Figure:
    """Trust gain against perplexity cost on the validation splits, one panel per aspect:
    the repair across β and each baseline across its grid (ordered by lr × steps), the
    points the tables report ringed. Up and to the left is worse; right and low is better."""
    use_paper_style()
    aspects = [a for a in ASPECTS if a in set(points["aspect"])]
    fig, axes = plt.subplots(1, len(aspects), figsize=(2 * COLUMN_WIDTH_IN, 2.4), squeeze=False)
    for ax, aspect in zip(axes[0], aspects, strict=True):
        for method, line in points[points["aspect"] == aspect].groupby("method", sort=False):
            order = (line.sort_values("beta") if method == "ours" else
                     line.assign(budget=line["lr"] * line["steps"]).sort_values("budget"))
            drawn = ax.plot(order["rel_change_logodds"], -order["rel_change_ppl"], marker="o",
                            ms=2.5, lw=0.8, label="ours (PBRF, β grid)" if method == "ours"
                            else method)[0]
            chosen = order[order["matched"]]
            ax.scatter(chosen["rel_change_logodds"], -chosen["rel_change_ppl"], s=45,
                       facecolors="none", edgecolors=drawn.get_color(), lw=1.2)
        ax.axhline(0, color="0.6", lw=0.6, ls=":")
        ax.axvline(0, color="0.6", lw=0.6, ls=":")
        # Grids span orders of magnitude (a diverging point costs +100s of %): symlog keeps
        # the region around the reported points, within a few %, readable.
        here = points[points["aspect"] == aspect]
        for axis, values in (("x", here["rel_change_logodds"]), ("y", -here["rel_change_ppl"])):
            getattr(ax, f"set_{axis}scale")("symlog", linthresh=1.0)
            getattr(ax, f"set_{axis}lim")(min(values.min(), 0) - 0.5, max(values.max(), 1) * 2)
        ax.set(title=aspect_label(aspect), xlabel="trust gain, $F_j$ (%)",
               ylabel="perplexity increase (%)" if ax is axes[0][0] else "")
    axes[0][-1].legend(fontsize=6, title="ringed: reported", title_fontsize=6,
                       loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _finished(fig)


def plot_figure3(rows: pd.DataFrame) -> plt.Figure:
    """Figure 3: repair wall time per |S| against retraining without S, log scale."""
    use_paper_style()
    bars = rows[rows["what"] != "factor_fit"]
    labels = [f"repair\n|S|={n}" if w == "repair" else "retrain\nwithout S"
              for w, n in zip(bars["what"], bars["subset_size"], strict=True)]
    colours = ["C0" if w == "repair" else "C3" for w in bars["what"]]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.4))
    ax.bar(labels, bars["seconds"], color=colours)
    ax.set(yscale="log", ylabel="wall time (s)")
    retrain = bars.loc[bars["what"] == "retrain_without_S", "seconds"]
    if len(retrain):  # each repair bar carries retraining time / its time
        for x, (what, seconds) in enumerate(zip(bars["what"], bars["seconds"], strict=True)):
            if what == "repair":
                ratio = retrain.iloc[0] / seconds
                ax.annotate(f"{ratio:.1f}×" if ratio < 10 else f"{ratio:.0f}×", (x, seconds),
                            xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", fontsize=7)
        ax.set_ylim(top=bars["seconds"].max() * 2)
        ax.set_title("retraining time / repair time above each bar")
    return _finished(fig)


def build_timing_outputs(params: Params) -> list[Path]:
    """timing.csv and Figure 3 from step 06."""
    result = read_json(TIMING.require(params.run_dir(), "result"))
    rows = pd.DataFrame(result["rows"])
    capped = rows[(rows["what"] == "repair") & (rows["requested_size"] > rows["subset_size"])]
    note = (f" Requested |S| of {', '.join(str(int(n)) for n in capped['requested_size'])} "
            f"capped at the {result['n_train']} SFT train samples." if len(capped) else "")
    rows["subset_size"] = rows["subset_size"].astype("Int64")
    paths = write_table(rows[["what", "subset_size", "seconds"]], params.tables_dir(), "timing",
                        float_format="%.2f",
                        caption=f"{params.name}: wall seconds on {result['device']} "
                                f"({result['threads']} threads); repair = median of "
                                f"{result['repeats']}.{note}")
    paths += save_figure(plot_figure3(rows), params.figures_dir(), "figure3")
    return paths


def build_paper_comparison(params: Params) -> list[Path]:
    """``paper_vs_ours.md``: the paper's Tables 1, 2 and 4 beside this config's."""
    tables = params.tables_dir()

    def read(stem: str) -> pd.DataFrame | None:
        return read_table(params, stem) if (tables / f"{stem}.csv").exists() else None

    table1 = read_table(params, "table1")
    data = params.data
    beta = reported_beta(params)
    note = (f"Ours: {params.model.source or 'a tiny random-init model'}, SFT on "
            f"{data.hh.max_train or 'all'} HH dialogues, k = {params.selection.k}, "
            f"β = {beta:g}. Paper: Pythia 1.4B-6.9B and Qwen2.5 1.5B-7B, SFT on "
            f"the 96k static-hh dialogues, k = 100.")
    text = paper_vs_ours(table1, read("table2"), read("table4"), model_label=params.name,
                         scale_note=note)
    return [write_text(tables / "paper_vs_ours.md", text)]


SEED_TABLES = {"table1": ("aspect",), "table2": ("aspect",), "table4": ("aspect", "method"),
               "ablations": ("aspect", "method")}
"""Tables summarised over seeds, and the columns that name a row of each."""


def seed_summary(runs: list[Params], stem: str) -> pd.DataFrame:
    """Mean and sample standard deviation over the seeds' ``stem`` tables of each change of
    :data:`CHANGES` they have, per row (aspect, and method where the table has one), and
    ``better_in``: in how many seeds the interval of ΔF_j lies wholly below zero, which is
    what "holds across seeds" means for a row. Single random draws are left out: each is
    named by its own seed, which differs between runs, so only their mean (``random``)
    compares across seeds."""
    keys = list(SEED_TABLES[stem])
    every = pd.concat([read_table(p, stem) for p in runs])
    if "method" in every:
        every = every[~every.method.map(is_random_draw)]
    grouped = every.groupby(keys, sort=False)
    stats = grouped[[c for c in CHANGES if c in every]].agg(["mean", "std"])
    stats.columns = [f"{name}_{stat}" for name, stat in stats.columns]
    better = grouped.delta_logodds_ci_high.agg(lambda high: int((high < 0).sum()))
    return stats.assign(better_in=better, seeds=grouped.size()).reset_index()


def build_seed_tables(params: Params, runs: list[Params]) -> list[Path]:
    """``tables/<name>/seeds/<table>.*``: each table's changes as mean ± std over seeds."""
    seeds = ", ".join(str(p.seed) for p in runs)
    paths: list[Path] = []
    for stem in SEED_TABLES:
        if not all((p.tables_dir() / f"{stem}.csv").exists() for p in runs):
            print(f"skipping {stem} over seeds: not every seed has it")
            continue
        paths += write_table(seed_summary(runs, stem), params.tables_dir() / "seeds", stem,
                             caption=f"{params.name}: changes against Post-SFT, mean ± standard "
                                     f"deviation over seeds {seeds} (seed_scope: "
                                     f"{params.seed_scope}). {_CHANGES} better_in: the seeds "
                                     f"whose {100 * bootstrap_of(params).confidence:g} % paired "
                                     f"bootstrap interval of delta_logodds lies below 0.")
    if params.heldout.enabled:
        from trustrepair.report_heldout import build_seed_heldout  # it builds on this module

        paths += build_seed_heldout(params, runs)
    return paths


def build_all(params: Params) -> list[Path]:
    """Rebuild every table and figure whose step has saved results."""
    builders = {SFT: build_sft_outputs, ATTRIBUTION: build_attribution_outputs,
                PLANTED: build_planted_outputs, SELECTION: build_selection_outputs,
                REPAIR: build_repair_outputs, ABLATIONS: build_ablation_outputs,
                TIMING: build_timing_outputs, PAPER: build_paper_comparison}
    if params.heldout.enabled:
        from trustrepair.report_heldout import build_heldout_outputs  # it builds on this module

        builders[HELDOUT] = build_heldout_outputs
    paths: list[Path] = []
    for step, builder in builders.items():
        try:
            paths += builder(params)
        except FileNotFoundError as missing:
            print(f"skipping {step.name}: no saved results yet "
                  f"({display_path(missing.filename)})")
    return paths
