"""Tables and figures, built from saved results only.

Nothing here trains, attributes or evaluates: every builder reads JSON that a step
wrote under ``runs/<config>/`` and writes ``tables/<config>/`` and ``figures/<config>/``,
so ``trustrepair figures`` rebuilds the paper's outputs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from trustrepair.artifacts import atomic_path, read_json, write_text  # noqa: E402
from trustrepair.params import ASPECTS, Params  # noqa: E402

ASPECT_LABELS = {"truthfulness": "Truthfulness", "machine_ethics": "Machine ethics",
                 "stereotypical_bias": "Stereotypical bias"}
COLUMN_WIDTH_IN = 3.25
"""One column of a two-column paper."""


def use_paper_style() -> None:
    """One look for every figure: seaborn paper context, colour-blind-safe palette."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=0.9)
    plt.rcParams.update({"figure.dpi": 150, "savefig.bbox": "tight", "pdf.fonttype": 42})


def write_table(frame: pd.DataFrame, directory: Path, stem: str, float_format: str = "%.3f",
                caption: str = "") -> list[Path]:
    """Write one table as CSV (full precision), Markdown and LaTeX booktabs."""
    directory = Path(directory)
    paths = [directory / f"{stem}.{ext}" for ext in ("csv", "md", "tex")]
    write_text(paths[0], frame.to_csv(index=False))
    shown = frame.copy()
    for col in shown.select_dtypes("number").columns:
        shown[col] = shown[col].map(lambda v: float_format % v)
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    rows = ["| " + " | ".join(map(str, r)) + " |" for r in shown.itertuples(index=False)]
    write_text(paths[1], "\n".join([header, rule, *rows]) + "\n")
    write_text(paths[2], _booktabs(shown, caption))
    return paths


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


def save_figure(fig: plt.Figure, directory: Path, stem: str) -> list[Path]:
    """Save a figure as PDF and PNG, atomically."""
    paths = []
    for ext in ("pdf", "png"):
        path = Path(directory) / f"{stem}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext)
        paths.append(path)
    plt.close(fig)
    return paths


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
        {"aspect": ASPECT_LABELS.get(a, a), "model": label, "log-odds": v}
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
    fig.tight_layout()
    return fig


def build_sft_outputs(params: Params) -> list[Path]:
    """Table 1 (Pre/Post-SFT) and the log-odds distribution figure from step 01's results."""
    step = params.run_dir() / "01_sft"
    pre, post = read_json(step / "eval_pre.json"), read_json(step / "eval_post.json")
    norm = "length-normalised" if post.get("length_normalized", True) else "summed"
    caption = (f"{params.name}: trust log-odds F_j ({norm}, lower is better) on each aspect's "
               f"test split and token-weighted perplexity on the HH test split "
               f"({post['ppl_samples']} dialogues).")
    paths = write_table(table1_pre_post(pre, post), params.tables_dir(), "table1_pre_post",
                        caption=caption)
    paths += save_figure(plot_logodds_distributions(pre, post), params.figures_dir(),
                         "logodds_pre_post")
    return paths


BUILDERS = {"01_sft": build_sft_outputs}
"""Step name -> builder of its tables and figures."""


def build_all(params: Params) -> list[Path]:
    """Rebuild every table and figure whose step has saved results."""
    paths: list[Path] = []
    for step, builder in BUILDERS.items():
        try:
            paths += builder(params)
        except FileNotFoundError as missing:
            print(f"skipping {step}: no saved results yet ({missing.filename})")
    return paths
