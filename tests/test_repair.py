"""The PBRF repair step against a dense solve, and its guard rails."""

from __future__ import annotations

import copy

import pytest
import torch

from trustrepair.attribution import detrimental, fit_and_score
from trustrepair.data import load_hh, load_trust, split_trust
from trustrepair.metrics import trust_logodds
from trustrepair.models import decoder_blocks, tiny_model, tracked_linear_modules
from trustrepair.params import AttributionParams, TinyModelParams
from trustrepair.prefix import PrefixCache
from trustrepair.repair import Preconditioner, pbrf_step, repair, subset_gradient

DAMPING = 1e-3


@pytest.fixture(scope="module", params=["llama", "gpt_neox"])
def fitted(request, tokenizer, fixture_data, tmp_path_factory):
    """A tiny model with EK-FAC factors and scores on its last block."""
    model = tiny_model(TinyModelParams(family=request.param, layers=2, hidden=16, heads=2,
                                       intermediate=32), len(tokenizer), seed=1).double()
    train = load_hh(fixture_data, test_fraction=0.2, verify=False)["train"].select(range(32))
    triples = split_trust(load_trust("truthfulness", fixture_data, verify=False))["train"]
    triples = triples.select(range(10))
    influence = fit_and_score(
        copy.deepcopy(model), tokenizer, train, {"truthfulness": triples},
        AttributionParams(train_batch_size=8, query_batch_size=8, damping=DAMPING),
        out_dir=tmp_path_factory.mktemp("factors"), name="f", sft_max_length=64,
        eval_max_length=64, normalized=True)
    return model, train, triples, influence


def _dense_solve(pre: Preconditioner, module: str, g: torch.Tensor) -> torch.Tensor:
    """(G + λI)⁻¹ vec(g) with G = (Q_S ⊗ Q_A) diag(Λ) (Q_S ⊗ Q_A)ᵀ built densely."""
    store = pre.storage[module]
    q_a = store["activation_eigenvectors"].double()
    q_s = store["gradient_eigenvectors"].double()
    # prepare() stored 1 / (Λ + λ); undo it to build G itself.
    eigenvalues = 1 / store["lambda_matrix"].double() - DAMPING
    basis = torch.kron(q_s, q_a)
    fisher = basis @ torch.diag(eigenvalues.reshape(-1)) @ basis.T
    system = fisher + DAMPING * torch.eye(len(fisher), dtype=torch.float64)
    return torch.linalg.solve(system, g.double().reshape(-1)).reshape(g.shape)


def test_step_equals_a_dense_solve(fitted, tokenizer) -> None:
    model, train, _, influence = fitted
    pre = Preconditioner.load(influence.factors_dir, damping=DAMPING)
    subset = train.select(range(4))
    grads = subset_gradient(model, tokenizer, subset, pre.modules, max_length=64)
    beta = 0.5
    repaired = pbrf_step(model, pre, grads, beta)
    before, after = dict(model.named_modules()), dict(repaired.named_modules())
    for module, g in grads.items():
        expected = beta * _dense_solve(pre, module, g)
        tol = 1e-5 * expected.abs().max().item()  # kronfluence preconditions in float32
        layer, new = before[module], after[module]
        torch.testing.assert_close(new.weight - layer.weight,
                                   expected[:, :layer.weight.shape[1]].to(layer.weight),
                                   rtol=1e-4, atol=tol)
        if layer.bias is not None:
            torch.testing.assert_close(new.bias - layer.bias, expected[:, -1].to(layer.bias),
                                       rtol=1e-4, atol=tol)
    untracked = [n for n, _ in model.named_parameters()
                 if not any(n.startswith(m + ".") for m in pre.modules)]
    params_after = dict(repaired.named_parameters())
    assert all(torch.equal(p, params_after[n]) for n, p in model.named_parameters()
               if n in untracked)


def test_the_subset_gradient_through_the_prefix_cache_is_the_same(fitted, tokenizer,
                                                                   tmp_path) -> None:
    model, train, _, influence = fitted
    pre = Preconditioner.load(influence.factors_dir, damping=DAMPING)
    subset = train.select(range(6))
    want = subset_gradient(model, tokenizer, subset, pre.modules, max_length=64)
    cache = PrefixCache(model, len(decoder_blocks(model)) - 1, tmp_path)
    got = subset_gradient(model, tokenizer, subset, pre.modules, max_length=64, cache=cache)
    assert cache.misses == len(subset) and list(tmp_path.rglob("*.safetensors"))
    for module, g in want.items():
        torch.testing.assert_close(got[module], g, rtol=1e-4, atol=1e-5 * g.abs().max().item())
    with pytest.raises(ValueError, match="prefix cache ends at block"):  # a block below it
        subset_gradient(model, tokenizer, subset, tracked_linear_modules(model, 2),
                        max_length=64, cache=cache)


def test_repair_is_deterministic_and_leaves_the_input_alone(fitted, tokenizer) -> None:
    model, train, _, influence = fitted
    pre = Preconditioner.load(influence.factors_dir, damping=DAMPING)
    original = {n: p.clone() for n, p in model.state_dict().items()}
    a = repair(model, tokenizer, pre, train.select(range(6)), 0.1, max_length=64, batch_size=4)
    b = repair(model, tokenizer, pre, train.select(range(6)), 0.1, max_length=64, batch_size=4)
    assert all(torch.equal(x, y) for x, y in
               zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert all(torch.equal(original[n], p) for n, p in model.state_dict().items())
    assert any(not torch.equal(original[n], p) for n, p in a.state_dict().items())


def test_small_beta_moves_f_the_predicted_way(fitted, tokenizer) -> None:
    """Eq. 6: ΔF ≈ -β · mean detrimental score of S, monotone in β while β is small."""
    model, train, triples, influence = fitted
    pre = Preconditioner.load(influence.factors_dir, damping=DAMPING)
    harm = detrimental(influence.scores["truthfulness"])
    chosen = harm.argsort(descending=True)[:4].tolist()
    slope = -harm[chosen].mean().item()
    base = trust_logodds(model, tokenizer, triples, max_length=64).mean
    grads = subset_gradient(model, tokenizer, train.select(chosen), pre.modules, max_length=64)
    changes = [trust_logodds(pbrf_step(model, pre, grads, beta), tokenizer, triples,
                             max_length=64).mean - base for beta in (1e-4, 2e-4, 4e-4)]
    assert all(c * slope > 0 for c in changes), (changes, slope)
    assert abs(changes[0]) < abs(changes[1]) < abs(changes[2])
    assert changes[0] == pytest.approx(1e-4 * slope, rel=0.1)


def test_bad_inputs_fail_before_compute(fitted, tokenizer) -> None:
    model, train, _, influence = fitted
    pre = Preconditioner.load(influence.factors_dir, damping=DAMPING)
    with pytest.raises(ValueError, match="beta must be > 0"):
        repair(model, tokenizer, pre, train.select(range(2)), 0.0, max_length=64)
    with pytest.raises(ValueError, match="subset is empty"):
        repair(model, tokenizer, pre, train.select([]), 0.1, max_length=64)
    other = copy.deepcopy(model)
    with torch.no_grad():
        dict(other.named_modules())[pre.modules[0]].weight.add_(1e-3)
    with pytest.raises(ValueError, match="different model"):
        repair(other, tokenizer, pre, train.select(range(2)), 0.1, max_length=64)
    wrong = copy.deepcopy(pre)
    wrong.modules = ["model.nowhere.q_proj"]
    with pytest.raises(ValueError, match="lacks"):
        repair(model, tokenizer, wrong, train.select(range(2)), 0.1, max_length=64)


def test_mean_reduced_gradient_is_the_mean_of_hf_per_sample_losses(fitted, tokenizer) -> None:
    """``loss_reduction: mean`` is the paper authors' loss: HF's ``.loss`` of each sample
    (the mean over its response tokens), whatever the batch it lands in."""
    from trustrepair.metrics import collate, encode_dialogues

    model, train, _, influence = fitted
    subset = train.select(range(6))
    modules = tracked_linear_modules(model, 1)
    got = subset_gradient(model, tokenizer, subset, modules, max_length=64, batch_size=4,
                          loss_reduction="mean")
    params = [dict(model.named_modules())[m].weight for m in modules]
    want = [torch.zeros_like(p) for p in params]
    for item in encode_dialogues(tokenizer, subset, 64):
        batch = collate([item], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"]).logits[0, :-1]  # HF's .loss, by hand
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"][0, 1:])
        for total, grad in zip(want, torch.autograd.grad(loss, params), strict=True):
            total += grad / len(subset)
    for module, w in zip(modules, want, strict=True):
        weight_part = got[module][:, : w.shape[1]].double()  # [dW | db]
        assert torch.allclose(weight_part, w, rtol=1e-5, atol=1e-8), module
    summed = subset_gradient(model, tokenizer, subset, modules, max_length=64,
                             loss_reduction="sum")
    assert not torch.allclose(summed[modules[0]], got[modules[0]]), "the two losses differ"


def test_steps_04_to_06_and_the_baselines_use_the_repair_loss(monkeypatch, tmp_path) -> None:
    """With factors and scores on the sum and ``repair.loss_reduction: mean`` (the authors'
    setting), step 04's subset gradients, step 05's PBRF rows and GA, SGA and GA+KL, and
    step 06's timed repair all reduce each sample's loss by its token mean."""
    from types import SimpleNamespace

    from datasets import Dataset

    from trustrepair import ablations, timing
    from trustrepair import repair as repair_module
    from trustrepair.ablations import TRAINERS, Ablations
    from trustrepair.repair import RepairTargets

    from .conftest import smoke_params

    p = smoke_params(tmp_path, **{"repair.loss_reduction": "mean", "repair.beta": 0.01})
    assert (p.attribution.loss_reduction, p.repair_loss_reduction) == ("sum", "mean")
    used: list[tuple[str, str]] = []

    def gradient(*args, loss_reduction, **kwargs):
        used.append(("gradient", loss_reduction))
        return {}

    train = Dataset.from_dict({"prompt": ["a"] * 4, "response": [" b"] * 4})
    pre = SimpleNamespace(modules=["m"], check_model=lambda model: None)
    exp = SimpleNamespace(params=p, data=SimpleNamespace(hh={"train": train}),
                          models=SimpleNamespace(load=lambda path: ("model", "tokenizer"),
                                                 prefix_cache=lambda model: None))
    monkeypatch.setattr(repair_module, "subset_gradient", gradient)
    monkeypatch.setattr(repair_module.Preconditioner, "of_run", lambda exp: pre)
    monkeypatch.setattr(repair_module, "post_sft_dir", lambda exp: tmp_path)
    monkeypatch.setattr(repair_module, "load_subsets", lambda exp: SimpleNamespace(
        of=lambda selector: {t: [0, 1] for t in (*p.data.trust.aspects, "common")}))
    RepairTargets.of_run(exp)

    monkeypatch.setattr(ablations, "subset_gradient", gradient)
    monkeypatch.setattr(ablations, "pbrf_step", lambda *args: None)
    abl = SimpleNamespace(p=p, _gradients={}, model="model", tokenizer="tokenizer",
                          preconditioner=pre, prefix=None, subset=lambda t, s: train,
                          retained=lambda aspect: train)
    Ablations.pbrf(abl, "truthfulness", "random", 0.01)
    for method in ("sga", "ga", "ga_kl"):
        function = "gradient_ascent_kl" if method == "ga_kl" else "gradient_ascent"
        monkeypatch.setattr(ablations.baselines, function,
                            lambda *args, loss_reduction, method=method, **kwargs:
                            used.append((method, loss_reduction)))
        TRAINERS[method](abl, "truthfulness", lr=1e-3, steps=1, max_length=8, seed=0)

    monkeypatch.setattr(timing, "repair", lambda *args, loss_reduction, **kwargs:
                        used.append(("timing", loss_reduction)))
    timing.time_repair(exp, "model", "tokenizer", pre, size=2, repeats=1)
    assert {reduction for _, reduction in used} == {"mean"}
    assert [what for what, _ in used] == ["gradient"] * (len(p.data.trust.aspects) + 2) + [
        "sga", "ga", "ga_kl", "timing"]
