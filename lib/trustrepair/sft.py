"""Supervised fine-tuning with the HF ``Trainer``, loss on response tokens only.

The paper fine-tunes on Anthropic HH (static) with AdamW (its Table 3). Checkpoints go
to a folder per setting so an interrupted run resumes where it stopped, from the last
checkpoint whose files match the checksums written once it was whole; the finished
model is saved with ``save_pretrained`` and the run's metrics as JSON beside it. A
resumed run ends with the model and ``train_loss`` of the uninterrupted one.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from functools import partial
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from trustrepair.artifacts import (
    folder_problem,
    is_main_process,
    read_json,
    write_folder_checksums,
    write_json,
)
from trustrepair.experiment import Experiment
from trustrepair.metrics import IGNORE, collate, encode, response_logits, response_loss
from trustrepair.models import is_saved_model, save_pretrained, train_only_last_blocks
from trustrepair.params import SFTParams
from trustrepair.profiling import phase
from trustrepair.steps import SFT, TRAINED, Step


def tokenize_dialogues(dialogues: Dataset, tokenizer: PreTrainedTokenizerBase,
                       max_length: int) -> Dataset:
    """Encode (prompt, response) rows for training: labels on response + EOS only."""
    def _encode(row: dict) -> dict:
        out = encode(tokenizer, row["prompt"], row["response"], max_length, add_eos=True)
        return {**out, "length": len(out["input_ids"])}

    return dialogues.map(_encode, remove_columns=dialogues.column_names, desc="tokenising")


def training_arguments(params: SFTParams, output_dir: Path, *, seed: int,
                       use_cpu: bool) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=params.epochs,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.grad_accum,
        warmup_steps=params.warmup_ratio,  # a float in [0, 1) is a share of all steps
        lr_scheduler_type=params.lr_scheduler,
        train_sampling_strategy="group_by_length" if params.group_by_length else "sequential",
        logging_steps=10,
        save_strategy="steps",
        save_steps=params.save_steps,
        save_total_limit=2,  # the one before the last, should the last prove damaged
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        remove_unused_columns=False,
        disable_tqdm=False,
    )


class _SeedBatchOrder(TrainerCallback):
    """Reseeds the length-grouped batch order from the data seed and the epoch at each
    epoch's start.

    The Trainer's own length-grouped sampler draws from the global RNG, whose state after a
    resume is not the one the uninterrupted run had at that epoch: the resumed run would
    skip the right number of batches of a different order.
    """

    def __init__(self) -> None:
        self.generator = torch.Generator()

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs) -> None:
        # state.epoch is fractional when a run resumes mid-epoch
        self.generator.manual_seed(args.data_seed + math.floor(state.epoch))


class _ChecksumCheckpoints(TrainerCallback):
    """Lists the SHA-256 of every file of a checkpoint once the Trainer has saved it
    whole, so that a resumed run can tell a damaged checkpoint (:func:`trusted_checkpoint`)."""

    def on_save(self, args: TrainingArguments, state: TrainerState,
                control: TrainerControl, **kwargs) -> None:
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if args.should_save and folder.is_dir():
            write_folder_checksums(folder)


def trusted_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest checkpoint in ``checkpoint_dir`` whose files match their checksums, or
    None (SFT starts afresh). A checkpoint that fails the check is named, with why and what
    happens instead, in one line, and removed (by the main process)."""
    numbered = [(int(m[1]), p) for p in Path(checkpoint_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                if p.is_dir() and (m := re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", p.name))]
    damaged: list[tuple[Path, str]] = []
    for _, checkpoint in sorted(numbered, reverse=True):
        problem = folder_problem(checkpoint)
        if problem is None:
            break
        damaged.append((checkpoint, problem))
    else:
        checkpoint = None
    for folder, problem in damaged:
        instead = (f"resuming from {checkpoint.name} instead" if checkpoint
                   else "SFT starts again from the beginning")
        print(f"SFT checkpoint {folder} is not used ({problem}): {instead}", flush=True)
        if is_main_process():
            shutil.rmtree(folder, ignore_errors=True)
    return checkpoint


class _WholeRunLoss(TrainerCallback):
    """Mean training loss per optimizer step over the whole run, resumed or not.

    The Trainer's ``train_loss`` covers only the steps since the resume. The steps before
    it are in the checkpoint's log history, unrounded, and complete because the loss is
    logged at every checkpoint.
    """

    def __init__(self) -> None:
        self.first_step, self.loss_before, self.logged_steps = 0, 0.0, 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs) -> None:
        self.first_step = state.global_step
        self.loss_before, self.logged_steps = _logged_loss(state.log_history)

    def on_step_end(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, **kwargs) -> None:
        # the steps after the last checkpoint are in the Trainer's own train_loss
        if control.should_save and state.global_step < state.max_steps:
            control.should_log = True

    def mean(self, result: TrainOutput) -> float:
        """Steps of a checkpoint that no log entry covers count as not run, not guessed."""
        steps = result.global_step - self.first_step
        return (self.loss_before + result.training_loss * steps) / (self.logged_steps + steps)


ROWS_PER_PASS = 2
"""Rows of a training batch run through the model together, longest first (see
:func:`response_loss_of_batch`)."""


def response_loss_of_batch(model: torch.nn.Module, inputs: dict[str, torch.Tensor]
                           ) -> tuple[torch.Tensor, int]:
    """Summed response cross-entropy of a right-padded batch, and its response tokens.

    The HF loss of the same batch, computed for less: the batch runs in passes of
    ``ROWS_PER_PASS`` rows of similar length, each cut to its longest row (a batch of 8 in
    data order carries about half padding), and the LM head runs at the response tokens
    only (a quarter of the tokens; SmolLM2's 49k-word head costs several blocks).
    """
    lengths = inputs["attention_mask"].sum(1)
    total = torch.zeros((), device=lengths.device)
    for rows in torch.argsort(lengths, descending=True, stable=True).split(ROWS_PER_PASS):
        width = int(lengths[rows].max())
        chunk = {k: inputs[k][rows, :width] for k in ("input_ids", "attention_mask", "labels")}
        total = total + response_loss(*response_logits(model, chunk), "sum")
    return total, int((inputs["labels"][:, 1:] != IGNORE).sum())


class _ResumableTrainer(Trainer):
    """A Trainer whose run, resumed from a checkpoint, ends with the model and the
    ``train_loss`` of the uninterrupted run, with the loss of
    :func:`response_loss_of_batch` where the model runs in this process alone."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._batch_order, self._run_loss = _SeedBatchOrder(), _WholeRunLoss()
        self.add_callback(self._batch_order)
        self.add_callback(self._run_loss)
        self.add_callback(_ChecksumCheckpoints())

    def train(self, *args, **kwargs) -> TrainOutput:
        """Train; ``train_loss`` is the mean over all the run's steps, those before a resume
        included."""
        result = super().train(*args, **kwargs)
        loss = self._run_loss.mean(result)
        return TrainOutput(result.global_step, loss, {**result.metrics, "train_loss": loss})

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                     return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None):
        """The HF causal-LM loss (summed over the batch's response tokens, divided by
        ``num_items_in_batch`` or else their number), without logits at other tokens. A
        wrapped model (DDP, FSDP) must run its own forward: the HF path."""
        if return_outputs or self.accelerator.unwrap_model(model) is not model:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        total, n_tokens = response_loss_of_batch(model, inputs)
        return total / (n_tokens if num_items_in_batch is None else num_items_in_batch)

    def _get_train_sampler(self, train_dataset: Dataset | None = None
                           ) -> torch.utils.data.Sampler | None:
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            sampler.generator = self._batch_order.generator
        return sampler

    def _load_from_checkpoint(self, resume_from_checkpoint: str,
                              model: torch.nn.Module | None = None) -> None:
        """Load the checkpoint's weights under the names ``from_pretrained`` gives them.

        Checkpoints keep a model's original weight names (GPT-NeoX saves ``lm_head`` as
        ``embed_out``); the Trainer's loader matches names verbatim and would leave such a
        weight at its value from before the resume, with only a warning. A model passed in
        (FSDP's wrapped one) is left to the Trainer's loader.
        """
        if model is not None:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        saved = type(self.model).from_pretrained(resume_from_checkpoint, dtype=self.model.dtype)
        self.model.load_state_dict(saved.state_dict())


def finetune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, train: Dataset,
             params: SFTParams, out_dir: Path, *, checkpoint_dir: Path, seed: int = 0,
             resume: bool = True) -> dict:
    """Fine-tune ``model`` in place on ``train`` and save it into ``out_dir`` (as
    :data:`~trustrepair.steps.TRAINED` lays it out).

    Resumes from the last intact checkpoint in ``checkpoint_dir`` if there is one (give
    each setting its own folder). Returns the training metrics; ``train_loss`` is the mean loss
    per optimizer step over the whole run, resumed or not. Under torchrun or
    ``accelerate launch`` every process trains (DDP) and the main one saves.
    """
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    n_trainable = train_only_last_blocks(model, params.train_blocks)
    encoded = tokenize_dialogues(train, tokenizer, params.max_length)
    args = training_arguments(params, checkpoint_dir, seed=seed,
                              use_cpu=not torch.cuda.is_available())
    trainer = _ResumableTrainer(model=model, args=args, train_dataset=encoded,
                                data_collator=partial(_collate_for_training,
                                                      pad_token_id=tokenizer.pad_token_id))
    checkpoint = trusted_checkpoint(checkpoint_dir) if resume else None
    if checkpoint:
        print(f"resuming SFT from {checkpoint}", flush=True)
    with phase("SFT"):
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    model.eval()
    metrics = {**result.metrics, "steps": result.global_step,
               "trainable_parameters": n_trainable,
               "train_samples": len(train), "train_tokens": int(sum(encoded["length"])),
               "loss_curve": [{"step": h["step"], "loss": h["loss"]}
                              for h in trainer.state.log_history if "loss" in h]}
    if trainer.is_world_process_zero():
        save_pretrained(model, tokenizer, out_dir / TRAINED["model"])
    trainer.accelerator.wait_for_everyone()  # no process reads the model before it is whole
    return metrics


def run_sft(exp: Experiment) -> tuple[Path, dict]:
    """Step 01: fine-tune the base model unless this setting's model is already saved.

    Returns the folder of the post-SFT model (``runs/<config>/01_sft/model``) and the
    training metrics.
    """
    return sft_into(exp, exp.data.hh["train"], SFT, exp.step_dir(SFT))


def sft_into(exp: Experiment, train: Dataset, step: Step, out_dir: Path) -> tuple[Path, dict]:
    """Fine-tune the base model on ``train`` into ``out_dir`` with the params' SFT settings,
    unless that model is already saved; resumes from checkpoints, keyed on ``step``'s
    settings and those before it.

    Step 01 trains on the whole SFT set; step 05 retrains without the repair subset.
    """
    metrics_path, model_dir = out_dir / TRAINED["metrics"], out_dir / TRAINED["model"]
    if not is_saved_model(model_dir) and metrics_path.exists():
        metrics_path.unlink()

    timings: dict[str, float] = {}  # this process's, when it trains: only the main one writes

    def train_model() -> dict:
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() != "true":  # the plan is unsharded
            exp.models.checked_plan("sft", probe=False)
        model, tokenizer = exp.models.load()
        metrics = finetune(model, tokenizer, train, exp.params.sft, out_dir,
                           checkpoint_dir=out_dir / TRAINED["checkpoints"] / exp.fingerprint(step),
                           seed=exp.params.sft.seed, resume=not exp.recompute)
        timings.update({name: metrics.pop(name) for name in TIMING_METRICS if name in metrics})
        if is_main_process():
            write_json(out_dir / TRAINED["timings"], timings)
        return metrics

    metrics = exp.cached(step, metrics_path, train_model)
    seconds = timings["train_runtime"] if timings else training_seconds(out_dir)
    return model_dir, {**metrics, "train_runtime": seconds}


TIMING_METRICS = ("train_runtime", "train_samples_per_second", "train_steps_per_second")
"""The Trainer's metrics that are wall-clock measurements, kept in ``TRAINED["timings"]``."""


def training_seconds(out_dir: Path) -> float:
    """Wall seconds of the SFT run saved in ``out_dir`` (older runs kept them with the
    metrics)."""
    out_dir = Path(out_dir)
    timings = out_dir / TRAINED["timings"]
    return read_json(timings if timings.exists() else out_dir / TRAINED["metrics"])["train_runtime"]


def _logged_loss(log_history: list[dict]) -> tuple[float, int]:
    """Summed training loss of the logged steps, and the last logged step.

    Each log entry holds the mean loss of the steps since the entry before it.
    """
    total, last_step = 0.0, 0
    for entry in log_history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - last_step)
            last_step = entry["step"]
    return total, last_step


def _collate_for_training(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    return collate([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples],
                   pad_token_id)
