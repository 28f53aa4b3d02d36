"""Planted-harm recovery under both per-sample losses and both EK-FAC dampings.

Reads step 02b of ``params/planted.yaml`` (loss 'sum', kronfluence's heuristic damping)
and of the three cells in ``params/planted_grid/``, and writes the 2 × 2 table of AUROC
(with its bootstrap interval) and precision@k per aspect to
``tables/planted/loss_damping.{csv,md,tex}``. Only EK-FAC depends on both settings; the
gradient dot product depends on the loss only and is shown beside it.

    make planted-grid        # runs the three cells (sharing planted.yaml's SFT), then this
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trustrepair.params import load_params
from trustrepair.report import attribution_grid_table, write_table

CELLS = ["params/planted.yaml", *sorted(map(str, Path("params/planted_grid").glob("*.yaml")))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", nargs="*", default=CELLS, help="the grid's params files")
    parser.add_argument("--out", default="tables/planted", help="folder for the table")
    args = parser.parse_args()
    table = attribution_grid_table([load_params(file) for file in args.params])
    caption = ("Planted-harm recovery by per-sample loss and EK-FAC damping: AUROC "
               "[95% bootstrap interval] and precision@k per aspect.")
    for path in write_table(table, Path(args.out), "loss_damping", caption=caption):
        print(path)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
