"""Supervised fine-tuning with the HF ``Trainer``, loss on response tokens only.

The paper fine-tunes on Anthropic HH (static) with AdamW (its Table 3). Checkpoints go
to a folder per setting so an interrupted run resumes where it stopped; the finished
model is saved with ``save_pretrained`` and the run's metrics as JSON beside it.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from trustrepair.experiment import Experiment
from trustrepair.metrics import collate, encode
from trustrepair.models import save_pretrained, train_only_last_blocks
from trustrepair.params import SFTParams


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
        save_total_limit=1,
        report_to=[],
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        remove_unused_columns=False,
        disable_tqdm=False,
    )


def finetune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, train: Dataset,
             params: SFTParams, out_dir: Path, *, checkpoint_dir: Path, seed: int = 0,
             resume: bool = True) -> dict:
    """Fine-tune ``model`` in place on ``train`` and save it to ``out_dir/model``.

    Resumes from the last checkpoint in ``checkpoint_dir`` if one exists (give each
    setting its own folder). Returns the training metrics. Under torchrun or
    ``accelerate launch`` every process trains (DDP) and the main one saves.
    """
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    n_trainable = train_only_last_blocks(model, params.train_blocks)
    encoded = tokenize_dialogues(train, tokenizer, params.max_length)
    args = training_arguments(params, checkpoint_dir, seed=seed,
                              use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=encoded,
                      data_collator=partial(_collate_for_training,
                                            pad_token_id=tokenizer.pad_token_id))
    checkpoint = (get_last_checkpoint(str(checkpoint_dir))
                  if resume and checkpoint_dir.is_dir() else None)
    if checkpoint:
        print(f"resuming SFT from {checkpoint}", flush=True)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    model.eval()
    metrics = {**result.metrics, "steps": result.global_step,
               "trainable_parameters": n_trainable,
               "train_samples": len(train), "train_tokens": int(sum(encoded["length"])),
               "loss_curve": [{"step": h["step"], "loss": h["loss"]}
                              for h in trainer.state.log_history if "loss" in h]}
    if trainer.is_world_process_zero():
        save_pretrained(model, tokenizer, out_dir / "model")
    trainer.accelerator.wait_for_everyone()  # no process reads the model before it is whole
    return metrics


def run_sft(exp: Experiment) -> tuple[Path, dict]:
    """Step 01: fine-tune the base model unless this setting's model is already saved.

    Returns the folder of the post-SFT model (``runs/<config>/01_sft/model``) and the
    training metrics.
    """
    return sft_into(exp, exp.hh["train"], "01_sft", exp.step_dir("01_sft"))


def sft_into(exp: Experiment, train: Dataset, step: str, out_dir: Path) -> tuple[Path, dict]:
    """Fine-tune the base model on ``train`` into ``out_dir/model`` with the params' SFT
    settings, unless that model is already saved; resumes from checkpoints.

    Step 01 trains on the whole SFT set; step 05 retrains without the repair subset.
    """
    metrics_path, model_dir = out_dir / "sft_metrics.json", out_dir / "model"
    if not (model_dir / "config.json").exists() and metrics_path.exists():
        metrics_path.unlink()

    def train_model() -> dict:
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() != "true":  # the plan is unsharded
            exp.checked_plan("sft", probe=False)
        model, tokenizer = exp.load_model()
        return finetune(model, tokenizer, train, exp.params.sft, out_dir,
                        checkpoint_dir=out_dir / "checkpoints" / exp.fingerprint(step),
                        seed=exp.params.seed, resume=not exp.recompute)

    return model_dir, exp.cached(step, metrics_path, train_model)


def _collate_for_training(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    return collate([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples],
                   pad_token_id)
