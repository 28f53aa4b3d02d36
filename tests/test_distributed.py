"""SFT on two processes (torchrun, gloo on CPU) equals SFT on one with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import smoke_params


def _sft(params_file: Path, processes: int) -> subprocess.CompletedProcess:
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m"] if processes > 1 else
              [sys.executable, "-m"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launch, "trustrepair.cli", "sft", str(params_file)], env=env,
                          capture_output=True, text=True, timeout=600)


def _params_file(tmp_path: Path, batch_size: int) -> Path:
    """Smoke SFT with batches in data order and a train set that divides into global
    batches of 8, so the batches do not depend on the number of processes (otherwise the
    distributed sampler repeats samples to fill the last one)."""
    params = smoke_params(tmp_path, **{"sft.batch_size": batch_size, "data.hh.max_train": 64,
                                       "sft.group_by_length": False})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return path


def test_two_processes_train_the_model_one_process_trains(tmp_path) -> None:
    runs = {}
    for processes, batch_size in ((1, 8), (2, 4)):
        folder = tmp_path / f"{processes}proc"
        folder.mkdir()
        done = _sft(_params_file(folder, batch_size), processes)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"({processes} processes" in done.stdout
        step = folder / "runs" / "smoke" / "01_sft"
        runs[processes] = (load_file(step / "model" / "model.safetensors"),
                           json.loads((step / "sft_metrics.json").read_text()))
    (one, one_metrics), (two, two_metrics) = runs[1], runs[2]
    assert one_metrics["steps"] == two_metrics["steps"] > 1
    assert one.keys() == two.keys()
    base = _base_weights(tmp_path / "1proc")
    assert any(not torch.equal(one[k], base[k]) for k in one)  # training moved the weights
    # Two processes average two half-batch losses: the same value up to float32 rounding.
    assert [e["step"] for e in two_metrics["loss_curve"]] == \
        [e["step"] for e in one_metrics["loss_curve"]]
    assert [e["loss"] for e in two_metrics["loss_curve"]] == pytest.approx(
        [e["loss"] for e in one_metrics["loss_curve"]], rel=1e-6)
    # AdamW divides each coordinate by its own gradient scale, so where a gradient is
    # near zero, summation-order rounding can move that coordinate's update (by up to two
    # learning rates a step). Nearly every coordinate agrees to 1e-5 (0.3 % of one step at
    # the smoke learning rate); none may differ by more than AdamW can move it.
    lr = smoke_params(tmp_path).sft.learning_rate
    for name in one:
        close = torch.isclose(two[name], one[name], rtol=1e-4, atol=1e-5)
        assert close.double().mean() >= 0.999, name
        assert (two[name] - one[name]).abs().max() <= 2 * lr * one_metrics["steps"], name


def _base_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The random-init base model the SFT started from (built in the params' cache)."""
    (path,) = (folder / "cache").rglob("model.safetensors")
    return load_file(path)
