"""Time SFT steps of a params file: HF's causal-LM loss against trustrepair.sft's.

Both sides take the same forward-and-backward steps on the first SFT batches, in data order,
with the params' trainable blocks: HF's loss (``model(**batch).loss``: logits at every token
of the padded batch) and :func:`trustrepair.sft.response_loss_of_batch` (passes of
similar-length rows, the LM head at response tokens only). It prints seconds per step, the
ratio, and the largest difference between the two losses and between their gradients.

    python benchmarks/bench_sft.py                         # params/default.yaml, 6 batches
    python benchmarks/bench_sft.py params/smoke.yaml --batches 3
"""

from __future__ import annotations

import argparse
import time

import torch

from trustrepair.experiment import Experiment
from trustrepair.metrics import collate
from trustrepair.models import train_only_last_blocks
from trustrepair.sft import response_loss_of_batch, tokenize_dialogues


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("params", nargs="?", default="params/default.yaml")
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    exp = Experiment.from_file(args.params)
    p = exp.params.sft
    model, tokenizer = exp.models.load()
    train_only_last_blocks(model, p.train_blocks)
    model.train()
    trained = [q for q in model.parameters() if q.requires_grad]
    encoded = tokenize_dialogues(exp.data.hh["train"], tokenizer, p.max_length)
    batches = [collate([{k: encoded[i][k] for k in ("input_ids", "labels")}
                        for i in range(s, s + p.batch_size)], tokenizer.pad_token_id)
               for s in range(0, args.batches * p.batch_size, p.batch_size)]

    def hf(batch: dict) -> torch.Tensor:
        return model(**batch).loss

    def ours(batch: dict) -> torch.Tensor:
        total, n_tokens = response_loss_of_batch(model, batch)
        return total / n_tokens

    results = {}
    for name, loss_of in (("HF loss", hf), ("trustrepair", ours)):
        start, runs = time.perf_counter(), []
        for batch in batches:
            loss = loss_of(batch)
            runs.append((loss.detach(), torch.autograd.grad(loss, trained)))
        results[name] = (time.perf_counter() - start) / len(batches), runs
    (before, old), (now, new) = results["HF loss"], results["trustrepair"]
    loss_diff = max(float((a[0] - b[0]).abs()) for a, b in zip(old, new, strict=True))
    grad_diff = max(float((g - h).abs().max() / h.abs().max())
                    for a, b in zip(old, new, strict=True)
                    for g, h in zip(b[1], a[1], strict=True))
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)
    print(f"{exp.params.name}: {len(batches)} batches of {p.batch_size}, {real:,} tokens "
          f"({padded:,} padded), {torch.get_num_threads()} threads")
    print(f"seconds per step: HF loss {before:.2f}, trustrepair {now:.2f}, "
          f"ratio {before / now:.2f}")
    print(f"largest |loss difference| {loss_diff:.2e}, largest gradient difference "
          f"(relative to the gradient's largest entry) {grad_diff:.2e}")


if __name__ == "__main__":
    main()
