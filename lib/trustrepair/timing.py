"""Step 06: how long the repair takes against retraining without S (paper Figure 3).

The repair is timed end to end as a user waits for it (subset gradients, EK-FAC
preconditioning, the parameter update) for growing |S|, capped by the SFT train set.
Retraining is the SFT run of step 05 without the common subset, on the same machine;
the one-off factor fit of step 02 is reported on its own row.
"""

from __future__ import annotations

import statistics
import time

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustrepair.artifacts import read_json
from trustrepair.attribution import post_sft_dir
from trustrepair.experiment import Experiment
from trustrepair.repair import Preconditioner, repair
from trustrepair.results import reported_beta
from trustrepair.sft import training_seconds
from trustrepair.steps import ABLATIONS, TIMING, TRAINED


def time_repair(exp: Experiment, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                preconditioner: Preconditioner, size: int, repeats: int) -> float:
    """Median wall seconds of one full repair on a random subset of ``size`` samples."""
    p = exp.params
    train = exp.data.hh["train"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(p.seed))
    subset = train.select(order[:size].tolist())
    beta, seconds = reported_beta(exp.params), []
    for _ in range(repeats):
        start = time.perf_counter()
        repair(model, tokenizer, preconditioner, subset, beta,
               max_length=p.sft.max_length, batch_size=p.attribution.train_batch_size,
               loss_reduction=p.repair_loss_reduction)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def run_timing(exp: Experiment) -> dict:
    """Rows (what, subset_size, seconds) for Figure 3; saved as JSON."""
    p = exp.params

    def compute() -> dict:
        retrained = ABLATIONS.output(exp.run_dir, "retrained", method="retrain")
        retrain_path = retrained / TRAINED["metrics"]
        if not retrain_path.exists():
            raise FileNotFoundError(f"no retraining time at {retrain_path}: run step 05 with "
                                    f"ablations.retrain: true first")
        preconditioner = Preconditioner.of_run(exp)
        model, tokenizer = exp.models.load(post_sft_dir(exp))
        n_train = len(exp.data.hh["train"])
        rows = []
        for requested in tqdm(p.timing.subset_sizes, desc="repair timing"):
            size = min(requested, n_train)
            if any(row["subset_size"] == size for row in rows):
                continue  # capped to a size already timed
            seconds = time_repair(exp, model, tokenizer, preconditioner, size, p.timing.repeats)
            rows.append({"what": "repair", "subset_size": size, "requested_size": requested,
                         "seconds": seconds})
        retrain = read_json(retrain_path)
        rows.append({"what": "retrain_without_S", "subset_size": n_train - retrain[
            "train_samples"], "requested_size": None, "seconds": training_seconds(retrained)})
        if preconditioner.fit_seconds is not None:
            rows.append({"what": "factor_fit", "subset_size": None, "requested_size": None,
                         "seconds": preconditioner.fit_seconds})
        return {"rows": rows, "n_train": n_train, "repeats": p.timing.repeats,
                "device": str(exp.device), "threads": torch.get_num_threads()}

    return exp.cached(TIMING, exp.output(TIMING, "result"), compute)
