"""Sample embeddings for the DPP kernel: mean-pooled last-layer hidden states (paper §3.5)."""

from __future__ import annotations

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustrepair.metrics import collate, encode


@torch.no_grad()
def mean_pooled_hidden_states(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                              dialogues: Dataset, *, max_length: int,
                              batch_size: int = 8) -> torch.Tensor:
    """(N, hidden) float32: the final layer's states averaged over each sample's tokens.

    Padding is excluded from the mean, so a sample's embedding does not depend on its batch.
    """
    device = next(model.parameters()).device
    encoded = [encode(tokenizer, p, r, max_length, add_eos=True)
               for p, r in zip(dialogues["prompt"], dialogues["response"], strict=True)]
    out = torch.empty(len(encoded), model.config.hidden_size)
    model.eval()
    for start in tqdm(range(0, len(encoded), batch_size), desc="hidden states", leave=False):
        batch = collate(encoded[start:start + batch_size], tokenizer.pad_token_id)
        mask = batch["attention_mask"].to(device)
        hidden = model(input_ids=batch["input_ids"].to(device), attention_mask=mask,
                       output_hidden_states=True).hidden_states[-1].float()
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        out[start:start + len(pooled)] = pooled.cpu()
    return out
