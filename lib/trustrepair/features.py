"""Sample embeddings for the DPP kernel: mean-pooled last-layer hidden states (paper §3.5)."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustrepair.metrics import encode, length_sorted_batches
from trustrepair.prefix import reads_cache


@torch.no_grad()
def mean_pooled_hidden_states(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                              dialogues: Dataset, *, max_length: int,
                              batch_size: int = 8) -> torch.Tensor:
    """(N, hidden) float32: the final layer's states averaged over each sample's tokens.

    Padding is excluded from the mean, so a sample's embedding does not depend on its batch.
    The decoder alone runs (``model.base_model``): its last state is the causal LM's final
    hidden state, and the LM head's logits over the vocabulary, a fifth of the forward pass
    of a 135M model, are never needed. A ``model`` that reads from a prefix cache
    (:func:`trustrepair.prefix.through`) runs only the blocks above it and leaves the lower
    blocks' states in the cache, where step 02's factor fit and scores, which pass over the
    same SFT sequences, find them.
    """
    device = next(model.parameters()).device
    encoded = [encode(tokenizer, p, r, max_length, add_eos=True)
               for p, r in zip(dialogues["prompt"], dialogues["response"], strict=True)]
    lm = model.model if reads_cache(model) else model
    out = torch.empty(len(encoded), lm.config.hidden_size)
    model.eval()
    for idx, batch in length_sorted_batches(encoded, batch_size, tokenizer.pad_token_id, device,
                                            "hidden states"):
        mask = batch["attention_mask"]
        if reads_cache(model):
            hidden = model.last_hidden_state(batch["input_ids"], mask).float()
        else:
            hidden = model.base_model(input_ids=batch["input_ids"],
                                      attention_mask=mask).last_hidden_state.float()
        out[idx] = ((hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)).cpu()
    return out
