"""What the repair is compared against in the ablation: GA, SGA, GA+KL and DPO.

Each acts on a copy of the post-SFT model and, like the repair, updates only the
given linear modules of the tracked decoder blocks. GA and SGA ascend the loss the
repair ascends (mean over S of each sample's response cross-entropy, summed over its
tokens or their mean: ``repair.loss_reduction``) with plain SGD, so the only difference
from the repair is the missing preconditioner (and the steps).
GA+KL adds a KL penalty that keeps retained SFT dialogues where the post-SFT model had
them; DPO instead trains on the trust pairs themselves, with TRL's ``DPOTrainer``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import trl.trainer.utils
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import DPOConfig, DPOTrainer

from trustrepair.metrics import (
    encode_dialogues,
    length_sorted_batches,
    response_logits,
    response_loss,
    summed_per_sample,
)
from trustrepair.prefix import PrefixCache, decoder_through, filling, through

StepCallback = Callable[[int, nn.Module], None]
"""``(n, trained)``: called after optimizer step n with the model being trained."""
MICRO_BATCH = 8
"""Rows per forward pass, grouped by length; a step's gradient is the same for any value."""


def gradient_ascent(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    subset: Dataset, modules: list[str], *, lr: float, steps: int,
                    batch_size: int | None = None, max_length: int, seed: int = 0,
                    cache: PrefixCache | None = None, loss_reduction: str = "sum",
                    on_step: StepCallback | None = None) -> PreTrainedModel:
    """A copy of ``model`` after ``steps`` SGD steps ascending the loss of ``subset``.

    Full batch ("GA") when ``batch_size`` is None or >= |S|, otherwise minibatches drawn
    with a generator seeded by ``seed`` ("SGA"). Each sample's loss is reduced over its
    tokens by ``loss_reduction``, as the repair's. The input model is left untouched. With
    a ``cache`` of ``model`` below the trained blocks, the frozen lower blocks run once
    per sequence instead of once per step. ``on_step(n, trained)`` sees the copy after
    each step n: the run's first n steps are exactly the run of n steps (a constant
    learning rate, batches drawn in order), so one run gives every shorter one.
    """
    _check_steps(model, modules, lr, steps, batch_size)
    _check_data(subset, "subset", ("prompt", "response"))
    return _ascend(model, tokenizer, subset, None, modules, lr=lr, steps=steps, kl_weight=0.0,
                   batch_size=batch_size, max_length=max_length, seed=seed, cache=cache,
                   loss_reduction=loss_reduction, on_step=on_step)


def gradient_ascent_kl(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       subset: Dataset, retain: Dataset, modules: list[str], *, lr: float,
                       steps: int, kl_weight: float, batch_size: int | None = None,
                       max_length: int, seed: int = 0, cache: PrefixCache | None = None,
                       loss_reduction: str = "sum",
                       on_step: StepCallback | None = None) -> PreTrainedModel:
    """GA on ``subset`` while minimising ``kl_weight`` · KL(post-SFT ‖ current) on ``retain``.

    The KL is taken between next-token distributions at the response tokens of the
    retained dialogues, reduced over a dialogue's tokens as the subset loss is
    (``loss_reduction``) and averaged over dialogues, so the two share a scale. The input
    model, never modified, is the post-SFT reference, so no second copy is held.
    ``kl_weight=0`` is exactly GA. ``cache``, ``loss_reduction`` and ``on_step`` as in
    :func:`gradient_ascent`.
    """
    _check_steps(model, modules, lr, steps, batch_size)
    if not kl_weight >= 0:
        raise ValueError(f"kl_weight must be >= 0 (0 is plain GA), not {kl_weight}")
    _check_data(subset, "subset", ("prompt", "response"))
    _check_data(retain, "retain", ("prompt", "response"))
    return _ascend(model, tokenizer, subset, retain, modules, lr=lr, steps=steps,
                   kl_weight=kl_weight, batch_size=batch_size, max_length=max_length, seed=seed,
                   cache=cache, loss_reduction=loss_reduction, on_step=on_step)


def dpo(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Dataset,
        modules: list[str], *, lr: float, steps: int, beta: float, batch_size: int,
        max_length: int, seed: int = 0, output_dir: Path,
        cache: PrefixCache | None = None) -> PreTrainedModel:
    """A copy of ``model`` after ``steps`` DPO steps preferring ``chosen`` over ``rejected``.

    TRL's ``DPOTrainer`` with its sigmoid loss and defaults (AdamW, linear decay), the
    reference a frozen copy of the input model. TRL tokenises prompt + response itself
    (EOS appended, a pair over ``max_length`` loses its end). Training runs where the
    model is; nothing is saved or reported, ``output_dir`` only hosts the Trainer. With a
    ``cache`` of ``model`` below ``modules``, the policy and the reference run only the
    blocks above it (:func:`trustrepair.prefix.decoder_through`): the lower blocks' states
    of a pair are computed once, not twice at every step of every learning rate.
    """
    _check_steps(model, modules, lr, steps, batch_size)
    if cache is not None:
        cache.check_below(model, modules)
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (the strength of the DPO preference), not {beta}")
    _check_data(pairs, "pairs", ("prompt", "chosen", "rejected"))
    policy = _trainable_copy(model, modules)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    args = DPOConfig(
        output_dir=str(output_dir), max_steps=steps, learning_rate=lr, beta=beta,
        per_device_train_batch_size=batch_size, max_length=max_length, seed=seed,
        data_seed=seed, activation_checkpointing=False, bf16=False, save_strategy="no",
        logging_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=next(model.parameters()).device.type == "cpu")
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, processing_class=tokenizer,
                         train_dataset=pairs.select_columns(["prompt", "chosen", "rejected"]))
    with decoder_through(cache, policy, reference), _compact_lm_head():
        trainer.train()
    del policy.forward  # TRL patched in a fused LM head (log-probs, no logits): undo it
    return _like_input(policy, model)


@contextlib.contextmanager
def _compact_lm_head() -> Iterator[None]:
    """TRL's fused LM head projects only the scored (response) positions on CUDA and XPU,
    but every position elsewhere, prompt and padding included, so that compilers for other
    devices see fixed tile shapes. A CPU compiles nothing: let it project only the scored
    positions too. Same log-probs; the head was half of DPO's time on a CPU."""
    triton_only = trl.trainer.utils._use_triton
    trl.trainer.utils._use_triton = lambda device: triton_only(device) or device.type == "cpu"
    try:
        yield
    finally:
        trl.trainer.utils._use_triton = triton_only


def _check_steps(model: nn.Module, modules: list[str], lr: float, steps: int,
                 batch_size: int | None) -> None:
    """Refuse bad optimisation settings and module names before any compute."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, not {lr}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if not modules:
        raise ValueError("modules is empty: pass the tracked linear modules "
                         "(models.tracked_linear_modules)")
    named = dict(model.named_modules())
    unknown = [m for m in modules if not isinstance(named.get(m), nn.Linear)]
    if unknown:
        raise ValueError(f"not linear modules of this model: {unknown[:3]}: pass names from "
                         f"models.tracked_linear_modules(model)")


def _check_data(data: Dataset, name: str, columns: tuple[str, ...]) -> None:
    """Refuse empty data or data without the columns the method reads."""
    if len(data) == 0:
        raise ValueError(f"{name} is empty: pass at least one row")
    missing = [c for c in columns if c not in data.column_names]
    if missing:
        raise ValueError(f"{name} lacks the columns {missing}: it needs {list(columns)}")


def _trainable_copy(model: PreTrainedModel, modules: list[str]) -> PreTrainedModel:
    """A copy in eval mode (no dropout) where only the weights and biases of ``modules`` train."""
    trained = copy.deepcopy(model).eval().requires_grad_(False)
    named = dict(trained.named_modules())
    for module in modules:
        named[module].requires_grad_(True)
    return trained


def _like_input(trained: PreTrainedModel, model: PreTrainedModel) -> PreTrainedModel:
    """Give the result the input's mode and requires_grad flags."""
    for new, old in zip(trained.parameters(), model.parameters(), strict=True):
        new.requires_grad_(old.requires_grad)
    return trained.train(model.training)


def _batches(n: int, batch_size: int | None, steps: int,
             generator: torch.Generator) -> Iterator[list[int]]:
    """Row indices per step: all rows, or a fresh random draw of ``batch_size`` rows."""
    for _ in range(steps):
        if batch_size is None or batch_size >= n:
            yield list(range(n))
        else:
            yield torch.randperm(n, generator=generator)[:batch_size].tolist()


def _retain_kl(current: nn.Module, reference: nn.Module, batch: dict[str, torch.Tensor],
               loss_reduction: str) -> torch.Tensor:
    """Σ over the batch's dialogues of KL(reference ‖ current) of the next token, summed
    over a dialogue's response tokens or their mean (``loss_reduction``)."""
    logits, _, mask = response_logits(current, batch)
    log_q = torch.log_softmax(logits.float(), -1)
    with torch.no_grad():
        log_p = torch.log_softmax(response_logits(reference, batch)[0].float(), -1)
    token_kl = nn.functional.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)
    return summed_per_sample(token_kl, mask, loss_reduction)


def _ascend(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, subset: Dataset,
            retain: Dataset | None, modules: list[str], *, lr: float, steps: int,
            kl_weight: float, batch_size: int | None, max_length: int, seed: int,
            cache: PrefixCache | None, loss_reduction: str,
            on_step: StepCallback | None) -> PreTrainedModel:
    """SGD on -mean_S L(z) + kl_weight · mean_retain KL, gradients summed over micro-batches."""
    if cache is not None:
        cache.check_below(model, modules)
    forget = encode_dialogues(tokenizer, subset, max_length)
    kept = encode_dialogues(tokenizer, retain, max_length) if kl_weight > 0 else []
    trained = _trainable_copy(model, modules)
    current, reference = through(cache, trained), through(cache, model)
    optimizer = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=lr)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    retain_draws = _batches(len(kept), batch_size, steps, generator) if kept else None
    was_training = model.training
    model.eval()
    with filling(cache, [e["input_ids"] for e in forget + kept], "ascent"):
        for step, rows in enumerate(_batches(len(forget), batch_size, steps, generator), 1):
            optimizer.zero_grad()
            for _, batch in length_sorted_batches([forget[i] for i in rows], MICRO_BATCH,
                                                  tokenizer.pad_token_id, device, desc="ascent"):
                loss = response_loss(*response_logits(current, batch), loss_reduction)
                (-loss / len(rows)).backward()
            if retain_draws is not None:
                retained = next(retain_draws)
                for _, batch in length_sorted_batches([kept[i] for i in retained], MICRO_BATCH,
                                                      tokenizer.pad_token_id, device, desc="KL"):
                    kl = _retain_kl(current, reference, batch, loss_reduction)
                    (kl_weight * kl / len(retained)).backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, trained)
    model.train(was_training)
    return _like_input(trained, model)
