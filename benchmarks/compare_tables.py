"""How far two runs' tables are apart: per CSV, the largest absolute difference of its
numbers, and any text cell, column or row that differs.

A change that should keep every number (a faster path to the same model) is checked by
regenerating the tables in a second checkout and comparing them with the committed ones:

    python benchmarks/compare_tables.py tables/default ../other-checkout/tables/default

Columns named like an interval's bounds are reported apart from the point estimates:
a bootstrap interval moves with the resampling noise of the values it resamples.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

INTERVAL_WORDS = ("low", "high", "lo", "hi", "ci")


def is_interval(column: str) -> bool:
    return any(part in INTERVAL_WORDS for part in column.lower().replace("-", "_").split("_"))


def compare(left: pd.DataFrame, right: pd.DataFrame) -> dict[str, object]:
    """Largest |difference| of point columns and of interval columns, and the text cells,
    columns or shape that differ (a row or column missing on one side)."""
    if list(left.columns) != list(right.columns) or left.shape != right.shape:
        return {"layout": f"{left.shape} {list(left.columns)} vs {right.shape} "
                          f"{list(right.columns)}"}
    point = interval = 0.0
    worst, texts = "", 0
    for column in left.columns:
        a, b = left[column], right[column]
        if all(pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
               for x in (a, b)):
            both = ~(a.isna() & b.isna())
            diff = (a[both] - b[both]).abs().max() if both.any() else 0.0
            diff = math.inf if pd.isna(diff) else float(diff)
            if is_interval(column):
                interval = max(interval, diff)
            elif diff > point or not worst:
                point, worst = max(point, diff), column
        else:
            texts += int((a.fillna("").astype(str) != b.fillna("").astype(str)).sum())
    return {"point": point, "worst": worst, "interval": interval, "text cells": texts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("left", type=Path)
    parser.add_argument("right", type=Path)
    args = parser.parse_args()
    names = sorted({p.relative_to(args.left) for p in args.left.rglob("*.csv")}
                   | {p.relative_to(args.right) for p in args.right.rglob("*.csv")})
    worst = 0.0
    for name in names:
        paths = args.left / name, args.right / name
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            print(f"{name}: only one side ({', '.join(missing)} missing)")
            continue
        result = compare(*(pd.read_csv(p) for p in paths))
        if "layout" in result:
            print(f"{name}: layout differs: {result['layout']}")
            continue
        worst = max(worst, result["point"])
        print(f"{name}: points {result['point']:.1e} ({result['worst']}), intervals "
              f"{result['interval']:.1e}, "
              f"text cells differing {result['text cells']}")
    print(f"largest point difference: {worst:.1e}")


if __name__ == "__main__":
    main()
