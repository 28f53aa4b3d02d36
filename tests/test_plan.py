"""``trustrepair plan``: sizes from the shape alone, times from a probe, refusal when too big."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from trustrepair import cli, models, plan, sft
from trustrepair.experiment import Experiment
from trustrepair.model_store import ModelStore
from trustrepair.params import ModelParams, TinyModelParams, load_params
from trustrepair.steps import ALL_SECTIONS, fingerprint

from .conftest import smoke_params

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "params").rglob("*.yaml") if not p.name.startswith("_"))
PUBLISHED = {
    "default": 134_515_008,
    "pythia-1.4b": 1_414_647_808,
    "pythia-2.8b": 2_775_208_960,
    "pythia-6.9b": 6_857_302_016,
    "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-3b": 3_085_938_688,
    "qwen2.5-7b": 7_615_616_512,
}
"""Parameter counts the models' hub pages state (SmolLM2-135M for default)."""


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_parameter_count_is_exact_for_tiny_models(family):
    spec = TinyModelParams(family=family, layers=3, hidden=32, heads=4, intermediate=64, vocab=300)
    shape, source = plan.model_shape(ModelParams(tiny=spec))
    model = models.tiny_model(spec, spec.vocab)
    assert source == "model.tiny"
    assert plan.parameter_count(shape) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_parameter_count_matches_transformers_for_shipped_shapes(path):
    shape, _ = plan.model_shape(load_params(path).model)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(plan.hf_config(shape))
    assert plan.parameter_count(shape) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", PUBLISHED)
def test_shipped_shapes_give_the_published_counts(name):
    path = ROOT / "params" / ("default.yaml" if name == "default" else f"paper/{name}.yaml")
    shape, _ = plan.model_shape(load_params(path).model)
    assert plan.parameter_count(shape) == PUBLISHED[name]


def test_shape_from_a_saved_folder(tmp_path):
    spec = TinyModelParams(family="gpt_neox", layers=2, hidden=32, heads=4, intermediate=64)
    models.tiny_model(spec, spec.vocab).config.save_pretrained(tmp_path)
    shape, source = plan.model_shape(ModelParams(source=str(tmp_path)))
    assert source.endswith("config.json")
    assert (shape.family, shape.layers, shape.hidden, shape.vocab) == ("gpt_neox", 2, 32, 512)


def test_a_hub_model_without_shape_is_refused():
    with pytest.raises(ValueError, match="add model.shape"):
        plan.model_shape(ModelParams(source="EleutherAI/pythia-1.4b"))


def test_factor_bytes_by_hand():
    # in 3 (+1 bias), out 2: A and its eigenvectors 2·4², G and its eigenvectors 2·2², λ 2·4.
    assert plan.Linear("m", 3, 2, bias=True).factor_bytes == 4 * (32 + 8 + 8)
    assert plan.Linear("m", 3, 2, bias=False).factor_bytes == 4 * (18 + 8 + 6)


def test_grouped_query_attention_sizes_k_and_v():
    shape, _ = plan.model_shape(load_params(ROOT / "params/paper/qwen2.5-7b.yaml").model)
    sizes = {m.name: (m.fan_in, m.fan_out, m.bias) for m in plan.block_linears(shape)}
    assert sizes["self_attn.k_proj"] == (3584, 512, True)
    assert sizes["self_attn.o_proj"] == (3584, 3584, False)


@pytest.fixture
def offline(monkeypatch):
    """Any weight loading or network access fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("plan must not load weights or reach the network")

    monkeypatch.setattr(models, "load_pretrained", refuse)
    monkeypatch.setattr(models, "prepare_base_model", refuse)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_params_file_plans_offline(path, offline, capsys):
    assert cli.main(["plan", str(path), "--no-probe", "--memory-gib", "1000"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "EK-FAC factors" in out and "--no-probe" in out


def test_too_little_memory_is_refused_naming_the_biggest_step(offline, capsys):
    params = load_params(ROOT / "params/default.yaml")
    biggest = max(plan.make_plan(params).steps, key=lambda s: s.peak(on_gpu=False))
    assert cli.main(["plan", "params/default.yaml", "--no-probe", "--memory-gib", "0.5"]) == 2
    err = capsys.readouterr().err
    assert f"step {biggest.name} needs" in err and "0.5 GiB available" in err


@pytest.mark.parametrize("on_disk", [True, False])
def test_the_prefix_states_kept_on_disk_are_sized(on_disk):
    params = load_params(ROOT / "params/default.yaml", prefix_cache_on_disk=on_disk)
    made = plan.make_plan(params)
    held = sum(size for step in made.steps for size in step.host_memory.values())
    disk = [line for line in plan.format_plan(made).splitlines() if line.startswith("disk")]
    assert held > 0
    assert disk == ([f"disk       up to {plan.format_size(held)} of prefix-activation states, "
                     f"kept between runs in {params.cache_dir() / 'prefix'}"] if on_disk else [])


def test_only_the_named_steps_are_checked(offline):
    made = plan.make_plan(load_params(ROOT / "params/default.yaml"))
    smallest, *_, biggest = sorted(made.steps, key=lambda s: s.peak(on_gpu=False))
    between = (smallest.peak(on_gpu=False) + biggest.peak(on_gpu=False)) // 2
    plan.check_fits(made, between, "a test budget", steps=[smallest.name])
    plan.check_fits(made, between, "a test budget", steps=[])
    for steps in ([biggest.name], None):
        with pytest.raises(plan.PlanRefused, match=f"step {biggest.name} needs"):
            plan.check_fits(made, between, "a test budget", steps=steps)


def test_a_step_that_cannot_fit_is_refused_before_its_model_loads(tmp_path, monkeypatch):
    exp = Experiment(smoke_params(tmp_path))
    monkeypatch.setattr(plan, "memory_available", lambda device: (2**20, "a 1 MiB budget"))
    monkeypatch.setattr(ModelStore, "load", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(plan.PlanRefused, match="step sft needs .* than the 0.0 GiB available"):
        sft.run_sft(exp)
    with pytest.raises(plan.PlanRefused, match="step attribution needs"):
        exp.models.checked_plan("attribution", probe=False)
    shown = exp.models.checked_plan()  # nothing named, nothing refused
    assert "plan for smoke" in shown and "ORDER OF MAGNITUDE" in shown


def test_a_sharded_sft_is_left_to_its_launcher(tmp_path, monkeypatch):
    """Under accelerate's FSDP each process holds a shard; the plan sizes a whole one."""
    exp = Experiment(smoke_params(tmp_path))
    monkeypatch.setattr(plan, "memory_available", lambda device: (2**20, "a 1 MiB budget"))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")

    def load(*args, **kwargs):
        raise InterruptedError("reached the model")

    monkeypatch.setattr(ModelStore, "load", load)
    with pytest.raises(InterruptedError):
        sft.run_sft(exp)


def test_a_notebooks_plan_leaves_the_random_state_alone(tmp_path):
    exp = Experiment(smoke_params(tmp_path))
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    exp.models.checked_plan()
    assert torch.equal(torch.rand(3), want)


def test_probe_times_a_block_of_the_smoke_model():
    params = load_params(ROOT / "params/smoke.yaml")
    probe = plan.probe_for(params)
    assert probe.forward_s > 0 and probe.train_s > 0
    assert probe.tokens == params.sft.batch_size * params.sft.max_length
    assert all(step.seconds > 0 for step in plan.make_plan(params, probe).steps)
    assert "ORDER OF MAGNITUDE" in plan.format_plan(plan.make_plan(params, probe))


def test_shape_changes_no_step_key_or_model_folder(tmp_path):
    with_shape = load_params(ROOT / "params/default.yaml")
    without = load_params(ROOT / "params/default.yaml", **{"model.shape": None})
    assert with_shape.model.shape is not None and without.model.shape is None
    assert fingerprint(with_shape, ALL_SECTIONS) == fingerprint(without, ALL_SECTIONS)
    assert (models.base_model_dir(with_shape.model, tmp_path, 0, "")
            == models.base_model_dir(without.model, tmp_path, 0, ""))
