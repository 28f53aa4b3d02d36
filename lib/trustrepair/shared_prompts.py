"""Score many responses to few prompts with each prompt's keys and values computed once.

Trust triples repeat their prompts: every ETHICS item has the same one, every stereotype
of a target group shares one, and a TruthfulQA question is the prompt of its proponent
and its opponent. A prompt is run through the model once (its keys and values per layer,
and the hidden state that predicts the first response token); each response then runs
alone on top of those keys and values (``past_key_values``), at the positions it has in
the whole sequence. The log-probabilities are those of the whole sequence scored at once,
up to float rounding (``tests/test_metrics.py`` compares them).

Prompts are handled a chunk at a time, so the keys and values held at once stay bounded
whatever the number of distinct prompts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast

from trustrepair.models import PLAIN_LM_HEAD

PROMPTS_PER_CHUNK = 64
"""Distinct prompts whose keys and values are held at once."""


def can_share_prompts(model: nn.Module) -> bool:
    """Whether ``model`` can score responses on a prompt's cached keys and values: a whole
    model of a registered family (a prefix-cache wrapper or DDP cannot take them) whose
    attention is full, not sliding (a window counts cache slots, not positions)."""
    config = getattr(model, "config", None)
    return (isinstance(model, PreTrainedModel)
            and getattr(config, "model_type", None) in PLAIN_LM_HEAD
            and "sliding_attention" not in (getattr(config, "layer_types", None) or ()))


Batch = tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]
"""Rows of the input, then logits at their response tokens [n, V], the tokens [n] and
where those sit in the rows [B, width] (as :func:`trustrepair.metrics.response_logits`)."""


def response_logits_on_shared_prompts(model: PreTrainedModel,
                                      sequences: Sequence[Sequence[int]],
                                      prompt_lengths: Sequence[int], batch_size: int,
                                      desc: str) -> Iterator[Batch]:
    """Logits at the response tokens of ``sequences`` (prompt + response token ids), each
    prompt run once; batches of up to ``batch_size`` rows, the shortest first.

    Every prompt must have a token. Call under ``torch.no_grad()``, the model in eval mode.
    """
    for rows, states, responses in _prompt_batches(model, sequences, prompt_lengths,
                                                   batch_size, desc):
        hidden, input_ids, mask = _response_hidden(model, states, responses)
        # Response token t is predicted by the hidden state before it: the prompt's last
        # for t = 0.
        last = torch.stack([prompt_hidden[-1] for _, prompt_hidden in states])
        predicting = torch.cat([last[:, None], hidden[:, :-1]], 1)
        yield rows, model.get_output_embeddings()(predicting[mask]), input_ids[mask], mask


def states_on_shared_prompts(model: PreTrainedModel, sequences: Sequence[Sequence[int]],
                             prompt_lengths: Sequence[int], layer: int, batch_size: int,
                             desc: str) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, hidden states entering decoder block ``layer`` at every token) of each of
    ``sequences``, each prompt run once: how :class:`trustrepair.prefix.PrefixCache` fills
    its states for responses that share prompts.

    Every prompt must have a token. Call under ``torch.no_grad()``, the model in eval mode.
    """
    for rows, states, responses in _prompt_batches(model, sequences, prompt_lengths,
                                                   batch_size, desc, layer):
        hidden, _, _ = _response_hidden(model, states, responses, layer)
        for row, (i, (_, prompt_hidden), response) in enumerate(
                zip(rows, states, responses, strict=True)):
            yield i, torch.cat([prompt_hidden, hidden[row, :len(response)]])


PromptState = tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]
"""Keys and values per layer [heads, n, d], and the hidden states at the prompt's tokens
[n, hidden]: the last layer's, or those entering the layer asked for."""


def _prompt_batches(model: PreTrainedModel, sequences: Sequence[Sequence[int]],
                    prompt_lengths: Sequence[int], batch_size: int, desc: str,
                    layer: int | None = None
                    ) -> Iterator[tuple[list[int], list[PromptState], list[list[int]]]]:
    """Batches of (rows of ``sequences``, their prompts' states, their responses), the
    prompts run a chunk at a time and the rows of a chunk batched shortest first."""
    if min(prompt_lengths, default=1) < 1:
        raise ValueError("a sequence has no prompt token: score it as a whole")
    rows_of: dict[tuple[int, ...], list[int]] = {}
    for i, (seq, n) in enumerate(zip(sequences, prompt_lengths, strict=True)):
        rows_of.setdefault(tuple(seq[:n]), []).append(i)
    prompts = sorted(rows_of, key=len)
    with tqdm(total=len(sequences), desc=f"{desc} (shared prompts)", leave=False) as progress:
        for start in range(0, len(prompts), PROMPTS_PER_CHUNK):
            chunk = prompts[start:start + PROMPTS_PER_CHUNK]
            states = _prompt_states(model, chunk, batch_size, layer)
            rows = sorted(((i, p) for p in chunk for i in rows_of[p]),
                          key=lambda row: len(sequences[row[0]]))
            for first in range(0, len(rows), batch_size):
                batch = rows[first:first + batch_size]
                yield ([i for i, _ in batch], [states[p] for _, p in batch],
                       [list(sequences[i][len(p):]) for i, p in batch])
                progress.update(len(batch))


def _hidden(out: BaseModelOutputWithPast, layer: int | None) -> torch.Tensor:
    """The last layer's output (``layer`` None) or the states entering block ``layer``."""
    return out.last_hidden_state if layer is None else out.hidden_states[layer]


def _prompt_states(model: PreTrainedModel, prompts: list[tuple[int, ...]],
                   batch_size: int, layer: int | None) -> dict[tuple[int, ...], PromptState]:
    """Each prompt's keys, values and hidden states, in right-padded batches."""
    device = next(model.parameters()).device
    states = {}
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        width = max(len(p) for p in batch)
        input_ids = torch.zeros((len(batch), width), dtype=torch.long, device=device)
        attention_mask = torch.zeros_like(input_ids)
        for row, p in enumerate(batch):
            input_ids[row, :len(p)] = torch.tensor(p)
            attention_mask[row, :len(p)] = 1
        out = model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                               use_cache=True, output_hidden_states=layer is not None)
        layers, hidden = out.past_key_values.layers, _hidden(out, layer)
        for row, p in enumerate(batch):
            n = len(p)
            states[p] = ([(kv.keys[row, :, :n], kv.values[row, :, :n]) for kv in layers],
                         hidden[row, :n])
    return states


def _response_hidden(model: PreTrainedModel, states: list[PromptState],
                     responses: list[list[int]], layer: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states [rows, width, hidden] of right-padded responses run on their prompts'
    keys and values, with the responses' token ids and where they sit [rows, width].

    The prompts are right-padded too, so a row's keys read [prompt, pad, response]: the
    attention mask hides the pads, and position ids continue each prompt where it ends.
    """
    device = next(model.parameters()).device
    rows, width = len(responses), max(len(r) for r in responses)
    prompt_width = max(kv[0][0].shape[1] for kv, _ in states)
    heads, _, head_dim = states[0][0][0][0].shape
    like = states[0][0][0][0]
    layers = [(like.new_zeros((rows, heads, prompt_width, head_dim)),
               like.new_zeros((rows, heads, prompt_width, head_dim))) for _ in states[0][0]]
    input_ids = torch.zeros((rows, width), dtype=torch.long, device=device)
    attention_mask = torch.zeros((rows, prompt_width + width), dtype=torch.long, device=device)
    position_ids = torch.zeros((rows, width), dtype=torch.long, device=device)
    for row, ((kv, _), response) in enumerate(zip(states, responses, strict=True)):
        n = kv[0][0].shape[1]
        for (keys, values), (k, v) in zip(layers, kv, strict=True):
            keys[row, :, :n], values[row, :, :n] = k, v
        input_ids[row, :len(response)] = torch.tensor(response)
        attention_mask[row, :n] = 1
        attention_mask[row, prompt_width:prompt_width + len(response)] = 1
        position_ids[row] = n + torch.arange(width, device=device)
    cache = DynamicCache(ddp_cache_data=layers, config=model.config)
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask,
                           position_ids=position_ids, past_key_values=cache, use_cache=True,
                           output_hidden_states=layer is not None)
    return _hidden(out, layer), input_ids, attention_mask[:, prompt_width:].bool()
