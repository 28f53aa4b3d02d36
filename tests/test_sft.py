"""SFT resumed from a checkpoint ends where an uninterrupted run ends."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers.trainer
from transformers import TrainerCallback

from trustrepair.data import load_hh
from trustrepair.metrics import IGNORE, collate, encode
from trustrepair.models import train_only_last_blocks
from trustrepair.params import SFTParams
from trustrepair.sft import finetune, response_loss_of_batch

INTERRUPT_STEP = 10
"""Step 10 of 12: the second epoch, after the checkpoint at step 8."""


class _InterruptAt(TrainerCallback):
    """Stops training the way Ctrl-C does, after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("group_by_length", [True, False])
def test_resumed_sft_matches_uninterrupted(tiny_lm, tokenizer, fixture_data, tmp_path,
                                           monkeypatch, group_by_length: bool) -> None:
    """Stopped mid-epoch and resumed, SFT ends with the uninterrupted run's weights, bit for
    bit, and its train_loss. Both families run: GPT-NeoX checkpoints store lm_head as
    embed_out."""
    train = load_hh(fixture_data, test_fraction=0.2, verify=False)["train"].select(range(24))
    params = SFTParams(epochs=2, learning_rate=3e-3, batch_size=4, max_length=32,
                       save_steps=4, group_by_length=group_by_length)

    def run(name: str, **kwargs) -> tuple[torch.nn.Module, dict]:
        model = copy.deepcopy(tiny_lm)
        metrics = finetune(model, tokenizer, train, params, tmp_path / name,
                           checkpoint_dir=tmp_path / name / "checkpoints", **kwargs)
        return model, metrics

    whole, whole_metrics = run("whole")
    with monkeypatch.context() as patch:
        patch.setattr(transformers.trainer, "DEFAULT_CALLBACKS",
                      [*transformers.trainer.DEFAULT_CALLBACKS, _InterruptAt(INTERRUPT_STEP)])
        with pytest.raises(KeyboardInterrupt):
            run("resumed")
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-8").is_dir()
    resumed, resumed_metrics = run("resumed", resume=True)

    assert resumed_metrics["steps"] == whole_metrics["steps"] == 12
    for (name, want), got in zip(whole.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(got, want), f"{name}: max |dw| {(got - want).abs().max().item():.3g}"
    assert resumed_metrics["train_loss"] == pytest.approx(whole_metrics["train_loss"], rel=1e-6)


def test_the_batch_loss_is_the_hf_loss_with_its_gradient(tiny_lm, tokenizer) -> None:
    """Passes of similar-length rows and the LM head at response tokens only give the loss
    and gradient of the whole padded batch through HF's own loss. In float64, but both
    losses take the cross-entropy in float32 (``logits.float()``): equal to its rounding."""
    model = copy.deepcopy(tiny_lm).double().train()
    train_only_last_blocks(model, 1)
    rows = [encode(tokenizer, p, r, max_length=64, add_eos=True) for p, r in [
        ("the cat", " sat on the mat and the dog ran"), ("tell me a fact about people", " no"),
        ("what is the capital of the land ?", " the big city"), ("the", " dog ran")]]
    batch = collate(rows, tokenizer.pad_token_id)
    trained = [p for p in model.parameters() if p.requires_grad]
    hf = model(**batch).loss
    hf_grad = torch.autograd.grad(hf, trained)
    total, n_tokens = response_loss_of_batch(model, batch)
    assert n_tokens == sum(len(r["input_ids"]) - 1 - r["labels"].count(IGNORE) + 1 for r in rows)
    ours = total / n_tokens
    for got, want in zip(torch.autograd.grad(ours, trained), hf_grad, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-9)
    assert ours.item() == pytest.approx(hf.item(), rel=1e-6)


def test_a_damaged_last_checkpoint_resumes_from_the_one_before(tiny_lm, tokenizer, fixture_data,
                                                               tmp_path, monkeypatch,
                                                               capsys) -> None:
    """The last checkpoint truncated after it was saved: SFT says so in one line, resumes
    from the checkpoint before it and still ends with the uninterrupted run's weights."""
    train = load_hh(fixture_data, test_fraction=0.2, verify=False)["train"].select(range(24))
    params = SFTParams(epochs=2, learning_rate=3e-3, batch_size=4, max_length=32, save_steps=4)

    def run(name: str, **kwargs) -> torch.nn.Module:
        model = copy.deepcopy(tiny_lm)
        finetune(model, tokenizer, train, params, tmp_path / name,
                 checkpoint_dir=tmp_path / name / "checkpoints", **kwargs)
        return model

    whole = run("whole")
    with monkeypatch.context() as patch:
        patch.setattr(transformers.trainer, "DEFAULT_CALLBACKS",
                      [*transformers.trainer.DEFAULT_CALLBACKS, _InterruptAt(INTERRUPT_STEP)])
        with pytest.raises(KeyboardInterrupt):
            run("resumed")
    checkpoints = tmp_path / "resumed" / "checkpoints"
    weights = checkpoints / "checkpoint-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    capsys.readouterr()
    resumed = run("resumed", resume=True)
    said = [line for line in capsys.readouterr().out.splitlines() if "checkpoint-8" in line]
    assert len(said) == 1 and "differs from the checksum" in said[0], said
    assert said[0].endswith("resuming from checkpoint-4 instead")
    for (name, want), got in zip(whole.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(got, want), name
