"""Where the seconds of a run go, per step and phase (trustrepair.profiling).

Runs ``trustrepair run PARAMS`` with ``$TRUSTREPAIR_PROFILE`` set (extra arguments, such as
``--force`` or ``--seeds 1 2``, are passed on), or with ``--report`` only reads a profile a
run already wrote, then prints per step its seconds, and per phase its seconds and share:
SFT, scoring on the whole model or on the prefix cache, the lower blocks of the prefix
cache, factor fits and scores, subset gradients, each baseline's training, loading models,
and ``other``. With ``--seeds`` it reports each seed's run (its own steps, not those it
copied), since the seeds' cost is what ``make seeds`` pays.

    python benchmarks/profile_run.py params/default.yaml               # run, then report
    python benchmarks/profile_run.py params/default.yaml --report      # report a finished run
    python benchmarks/profile_run.py params/default.yaml --seeds 1 2   # the seeds' runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from trustrepair.params import load_params
from trustrepair.profiling import PROFILE_ENV, per_step

PROFILE = "profile.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("params")
    parser.add_argument("--report", action="store_true", help="only report a finished run")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="S",
                        help="run (or report) these seeds' runs (trustrepair run --seeds)")
    args, passed_on = parser.parse_known_args()
    params = load_params(args.params)
    run_dir = params.run_dir()
    profile = run_dir / PROFILE  # the seeds' runs append to their config's own profile
    if args.seeds:
        passed_on += ["--seeds", *map(str, args.seeds)]
    if not args.report:
        run_dir.mkdir(parents=True, exist_ok=True)
        trustrepair = Path(sys.executable).with_name("trustrepair")
        done = subprocess.run([str(trustrepair), "run", args.params, *passed_on],
                              env={**os.environ, PROFILE_ENV: str(profile)}, check=False)
        if done.returncode:
            sys.exit(done.returncode)
    lines = [json.loads(line) for line in profile.read_text().splitlines() if line.strip()]
    runs = [params.seeded(seed).run_dir() for seed in args.seeds] if args.seeds else [run_dir]
    for run in runs:
        if args.seeds:
            print(f"\n== {run.name}")
        steps = json.loads((run / "manifest.json").read_text())["steps"]
        report(lines, {step: record for step, record in steps.items()
                       if "reused_from" not in record})


def report(lines: list[dict], steps: dict[str, dict]) -> None:
    """Print each step's seconds by phase."""
    total = 0.0
    for step, phases in per_step(lines, steps).items():
        seconds = sum(phases.values())
        total += seconds
        print(f"\n{step}: {seconds:,.0f} s")
        for name, s in sorted(phases.items(), key=lambda kv: -kv[1]):
            if s >= 0.5:
                print(f"  {name:<40} {s:8,.0f} s  {100 * s / seconds:5.1f} %")
    print(f"\nall steps: {total:,.0f} s ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
