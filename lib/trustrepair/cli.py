"""``trustrepair validate | plan | run | status | sft | figures`` — the commands the Makefile
calls."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from trustrepair.params import Params, ParamsError, display_path, load_params
from trustrepair.steps import MANIFEST

NOTEBOOKS = Path("notebooks")


def _validate(args: argparse.Namespace) -> None:
    from trustrepair.run_data import RunData

    params = load_params(args.params)
    print(params.to_yaml(), end="")
    if args.data:
        run_data = RunData(params)
        for line in run_data.check_data():
            print(line)
        for record in run_data.provenance():
            print(_describe_input(record))


def _describe_input(record: dict) -> str:
    """One line per input file: its rows, and whether it is the published copy."""
    from trustrepair.data import PUBLISHED

    path = Path(record["file"])
    verdict = ("the published file" if record["published"]
               else "NOT the published file" if path.name in PUBLISHED
               else "a file of no published name, not checked")
    return (f"{display_path(path)}: {record['rows']:,} rows, {record['usable_rows']:,} usable, "
            f"sha256 {record['sha256'][:16]}, {verdict}")


def _plan(args: argparse.Namespace) -> None:
    from trustrepair import plan

    params = load_params(args.params)
    the_plan = plan.make_plan(params, plan.probe_for(params) if args.probe else None)
    available = ((int(args.memory_gib * plan.GIB), "--memory-gib") if args.memory_gib
                 else plan.memory_available(the_plan.device))
    print(plan.format_plan(the_plan, available))
    plan.check_fits(the_plan, *available)


def _run(args: argparse.Namespace) -> None:
    import logging

    from trustrepair import runner

    # papermill streams each cell's output (progress bars included) through this logger.
    logging.basicConfig(format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.INFO)
    from trustrepair.run_data import RunData

    params = load_params(args.params)
    run_data = RunData(params)
    run_data.check_data()
    options = {"only": args.only, "force": args.force, "overwrite": args.overwrite,
               "params_source": Path(args.params), "data_files": run_data.provenance()}
    if args.seeds is None:
        runner.run(params, Path(args.notebooks), reuse=Path(args.reuse) if args.reuse else None,
                   **options)
        return
    from trustrepair import report

    runs = runner.run_seeds(params, Path(args.notebooks), args.seeds or list(params.seeds),
                            **options)
    for path in report.build_seed_tables(params, runs):
        print(display_path(path))


def _status(args: argparse.Namespace) -> None:
    from trustrepair import runner

    for step, state in runner.status(load_params(args.params), Path(args.notebooks)).items():
        print(f"{step:<16} {state}")


def _sft(args: argparse.Namespace) -> None:
    import torch
    from accelerate import PartialState

    from trustrepair.experiment import Experiment
    from trustrepair.sft import run_sft

    exp = Experiment(load_params(args.params))
    # Joins the process group of torchrun / accelerate launch (gloo on CPUs, NCCL on
    # GPUs); the Trainer reuses it. The base model is materialised once, by process 0.
    state = PartialState(cpu=not torch.cuda.is_available())
    with state.main_process_first():
        exp.data.check_data()
        exp.models.base_dir  # noqa: B018 (built on first access)
    model_dir, metrics = run_sft(exp)
    if state.is_main_process:
        print(f"post-SFT model: {model_dir} ({state.num_processes} processes, "
              f"{metrics['train_runtime']:.0f} s)")


def _published(params: Params, seeded: Params) -> Params | None:
    """Where a seed that has no run folder here has its tables, if anywhere: seeds run on
    several machines (or one per session) are summarised from their copied or committed
    tables, and the config's own seed, without a folder of its own, is the config's run."""
    if (seeded.run_dir() / MANIFEST).exists():
        return None
    sources = (seeded, params) if seeded.seed == params.seed else (seeded,)
    return next((p for p in sources if any(p.tables_dir().glob("*.csv"))), None)


def _figures(args: argparse.Namespace) -> None:
    from trustrepair import report, runner

    params = load_params(args.params)
    seeded = args.seeds is not None
    runs = (runner.seeded_runs(params, args.seeds or list(params.seeds), "rebuild") if seeded
            else [params])
    command = " ".join(["trustrepair", "run", args.params]
                       + (["--seeds", *map(str, args.seeds)] if seeded else []))
    published = {run.seed: source for run in runs if seeded
                 and (source := _published(params, run)) is not None}
    for seed, source in published.items():
        print(f"seed {seed}: no run folder here, so its published tables "
              f"({display_path(source.tables_dir())}) enter the tables over seeds as they are")
    runs_here = [run for run in runs if run.seed not in published]
    damaged = [problem for run in runs_here for problem in runner.damaged_outputs(run).values()]
    if damaged:
        raise RuntimeError(f"{damaged[0]}, so no table or figure is built from it"
                           f"{f' ({len(damaged) - 1} more such files)' if len(damaged) > 1 else ''}"
                           f": run `{command}` to recompute it")
    stale = {}
    for run in runs_here:
        for path in report.build_all(run):
            print(display_path(path))
        where = f"{display_path(run.run_dir())} " if seeded else ""
        stale |= {where + step: state
                  for step, state in runner.status(run, Path(args.notebooks)).items()
                  if state.startswith("stale")}
    if seeded:
        summarised = [published.get(run.seed, run) for run in runs]
        for path in report.build_seed_tables(params, summarised):
            print(display_path(path))
    for step, state in stale.items():
        print(f"{step}: {state}; its tables and figures may be left from an earlier run",
              file=sys.stderr)
    if stale:
        raise RuntimeError(f"results of {len(stale)} steps are missing or out of date: run "
                           f"`{command}` first")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trustrepair", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a params file and print the resolved config")
    p.add_argument("params")
    p.add_argument("--data", action="store_true", help="also load the data and check sizes")
    p.set_defaults(func=_validate)
    p = sub.add_parser("plan", help="estimate model size, memory and time without loading weights")
    p.add_argument("params")
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                   help="time one decoder block on this machine to estimate run times")
    p.add_argument("--memory-gib", type=float, metavar="X",
                   help="memory to plan for instead of what this machine has")
    p.set_defaults(func=_plan)
    p = sub.add_parser("run", help="execute the notebooks in order with papermill")
    p.add_argument("params")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these steps (e.g. 01)")
    p.add_argument("--force", action="store_true", help="rerun steps that are up to date")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results that another params file of the same name made")
    p.add_argument("--seeds", nargs="*", type=int, metavar="S",
                   help="rerun the seed-dependent steps once per seed into runs/<name>/seed-<S>/ "
                        "and tabulate mean and std over seeds (no S: the params' `seeds`)")
    p.add_argument("--reuse", metavar="RUN_DIR",
                   help="copy steps from this run folder where they finished with the same "
                        "settings and upstream results (e.g. share one SFT model)")
    p.add_argument("--notebooks", default=str(NOTEBOOKS), help=argparse.SUPPRESS)
    p.set_defaults(func=_run)
    p = sub.add_parser("status", help="which steps are up to date, and why the others are not")
    p.add_argument("params")
    p.add_argument("--notebooks", default=str(NOTEBOOKS), help=argparse.SUPPRESS)
    p.set_defaults(func=_status)
    p = sub.add_parser("sft", help="step 01's fine-tuning alone; runs under torchrun or "
                                   "accelerate launch on several processes")
    p.add_argument("params")
    p.set_defaults(func=_sft)
    p = sub.add_parser("figures", help="rebuild tables and figures from saved results")
    p.add_argument("params")
    p.add_argument("--seeds", nargs="*", type=int, metavar="S",
                   help="rebuild each seed's run under runs/<name>/seed-<S>/ instead, and the "
                        "tables over seeds (no S: the params' `seeds`)")
    p.add_argument("--notebooks", default=str(NOTEBOOKS), help=argparse.SUPPRESS)
    p.set_defaults(func=_figures)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ParamsError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"trustrepair: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"trustrepair: error: {_os_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trustrepair: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def _os_message(err: OSError) -> str:
    """One sentence for a failed write: which file, why, and which setting moves it."""
    where = f"{err.filename}: " if err.filename else ""
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{where}cannot write here ({err.strerror}): point paths.runs, paths.tables, "
                f"paths.figures or paths.cache at a writable folder")
    if err.errno == errno.ENOSPC:
        return f"{where}no space left on the disk: free some, or point paths.* elsewhere"
    return f"{where}{err.strerror or err}"


if __name__ == "__main__":
    sys.exit(main())
