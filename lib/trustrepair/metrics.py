"""Response log-probabilities, the trust log-odds F_j (paper eq. 3) and perplexity.

Everything here scores a *response* given a *prompt*: SFT loss, perplexity on HH test
and the trust metric all share :func:`encode` and :func:`response_logprobs`, so the
token boundary and the padding rules are the same wherever a number is computed.
Sequences are right-padded: with causal attention a real token never sees a pad that
follows it and positions stay 0..L-1, so a score does not depend on the batch it is in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustrepair import prefix
from trustrepair.models import split_lm_head
from trustrepair.profiling import phase
from trustrepair.shared_prompts import can_share_prompts, response_logits_on_shared_prompts

IGNORE = -100


def encode(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, max_length: int,
           add_eos: bool = False) -> dict[str, list[int]]:
    """Token ids of prompt + response, with labels only on the response (and EOS).

    Prompt and response are tokenised separately, so the boundary is exact. Too-long
    inputs lose prompt tokens from the left first: the scored response is kept whole.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if add_eos:
        response_ids = response_ids + [tokenizer.eos_token_id]
    if not response_ids:
        raise ValueError(f"empty response after tokenisation for prompt {prompt[:60]!r}")
    response_ids = response_ids[: max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(response_ids)):]
    return {"input_ids": prompt_ids + response_ids,
            "labels": [IGNORE] * len(prompt_ids) + response_ids}


def encode_dialogues(tokenizer: PreTrainedTokenizerBase, dialogues,
                     max_length: int) -> list[dict[str, list[int]]]:
    """(prompt, response) rows encoded as SFT saw them: labels on the response and EOS."""
    return [encode(tokenizer, p, r, max_length, add_eos=True)
            for p, r in zip(dialogues["prompt"], dialogues["response"], strict=True)]


def collate(examples: Sequence[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad encoded examples into a batch with an attention mask."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def response_logits(model: PreTrainedModel, batch: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token logits at the response tokens only, with their labels: [n, V], [n].

    Also returns ``mask`` [B, L-1], True where a logit predicts a response token. The LM
    head runs on those positions alone (:func:`trustrepair.models.split_lm_head`):
    responses are a quarter to a third of the tokens scored here, and a small model's
    head (SmolLM2: 49k x 576) costs as much as several decoder blocks.
    """
    body, head = split_lm_head(model)
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    return head(hidden[:, :-1][mask]), labels[mask], mask


def response_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                  reduction: str = "sum") -> torch.Tensor:
    """Σ over a batch of each sample's response cross-entropy L(z), as :func:`response_logits`
    returns the batch: summed over the sample's tokens, or their mean (``mean``: HF's
    per-sample ``.loss``), which weighs every sample alike whatever its length."""
    token_loss = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
    return summed_per_sample(token_loss, mask, reduction)


def summed_per_sample(token_values: torch.Tensor, mask: torch.Tensor,
                      reduction: str = "sum") -> torch.Tensor:
    """Σ over a batch of each sample's ``token_values`` (one per response token, in the
    order of :func:`response_logits`), summed over the sample's tokens or their ``mean``."""
    if reduction == "sum":
        return token_values.sum()
    if reduction != "mean":
        raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")
    per_token_weight = (1.0 / mask.sum(-1, keepdim=True).clamp(min=1)).expand_as(mask)[mask]
    return (token_values * per_token_weight).sum()


def response_logprobs(model: PreTrainedModel, batch: dict[str, torch.Tensor],
                      normalized: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence log P(response | prompt) and the number of response tokens.

    Differentiable; with ``normalized`` the log-prob is the mean over response tokens.
    """
    return _summed_logprobs(*response_logits(model, batch), normalized)


def _summed_logprobs(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                     normalized: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``mask``, the log-prob of its labelled tokens (their mean when
    ``normalized``) and their number, from the logits at those tokens."""
    logprobs = torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), -1)
    token_lp = logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    # Back to [B, L-1] and summed per row: deterministic, unlike an index_add on CUDA.
    total = torch.zeros(mask.shape, dtype=token_lp.dtype,
                        device=token_lp.device).masked_scatter(mask, token_lp).sum(-1)
    n_tokens = mask.sum(-1)
    return (total / n_tokens if normalized else total), n_tokens


def length_sorted_batches(encoded: Sequence[dict[str, list[int]]], batch_size: int,
                          pad_token_id: int, device: torch.device,
                          desc: str) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Batches of similar length, longest first (little padding, early out-of-memory),
    with the input positions of their rows; progress shown with tqdm."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]["input_ids"]))
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False):
        idx = order[start:start + batch_size]
        batch = collate([encoded[i] for i in idx], pad_token_id)
        yield idx, {k: v.to(device) for k, v in batch.items()}


def _scored_in_batches(model: PreTrainedModel, encoded: list[dict[str, list[int]]],
                       pad_token_id: int, batch_size: int, normalized: bool,
                       desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Score encoded examples batch by batch, returned in input order.

    Each distinct sequence is scored once (a stereotype is the opponent of several
    triples), and where a whole model scores responses to a repeated prompt, that prompt
    runs once (:mod:`trustrepair.shared_prompts`). Either way a sequence gets the value it
    would get alone, up to float rounding.
    """
    device = next(model.parameters()).device
    distinct: dict[tuple[tuple[int, ...], int], int] = {}
    for e in encoded:
        distinct.setdefault((tuple(e["input_ids"]), prompt_length(e)), len(distinct))
    position = torch.tensor([distinct[(tuple(e["input_ids"]), prompt_length(e))]
                             for e in encoded], dtype=torch.long)
    unique = [{"input_ids": list(ids), "labels": [IGNORE] * n + list(ids[n:])}
              for ids, n in distinct]
    prompts = Counter(ids[:n] for ids, n in distinct if n > 0)
    shared = ([i for i, (ids, n) in enumerate(distinct) if n > 0 and prompts[ids[:n]] > 1]
              if can_share_prompts(model) else [])
    alone = sorted(set(range(len(unique))) - set(shared))
    scores = torch.empty(len(unique), dtype=torch.float64)
    counts = torch.empty(len(unique), dtype=torch.long)
    was_training = model.training
    model.eval()
    where = "upper blocks on the prefix cache" if prefix.reads_cache(model) else "whole model"
    with torch.no_grad(), phase(f"scoring: {where}"):
        if shared:
            for rows, *logits in response_logits_on_shared_prompts(
                    model, [unique[i]["input_ids"] for i in shared],
                    [prompt_length(unique[i]) for i in shared], batch_size, desc):
                lp, n = _summed_logprobs(*logits, normalized)
                idx = [shared[r] for r in rows]
                scores[idx], counts[idx] = lp.double().cpu(), n.cpu()
        rest = [unique[i] for i in alone]
        with prefix.filling(model, [e["input_ids"] for e in rest], desc,
                            [prompt_length(e) for e in rest], batch_size):
            for rows, batch in length_sorted_batches(rest, batch_size, pad_token_id, device,
                                                     desc):
                lp, n = response_logprobs(model, batch, normalized)
                idx = [alone[r] for r in rows]
                scores[idx], counts[idx] = lp.double().cpu(), n.cpu()
    model.train(was_training)
    return scores[position], counts[position]


def prompt_length(example: dict[str, list[int]]) -> int:
    """Tokens before the first scored (labelled) one."""
    return next(i for i, label in enumerate(example["labels"]) if label != IGNORE)


def sequence_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      prompts: Sequence[str], responses: Sequence[str], *, batch_size: int = 8,
                      max_length: int = 256, normalized: bool = True, add_eos: bool = False,
                      desc: str = "log-probs") -> torch.Tensor:
    """log P(response | prompt) for each pair (mean per token when ``normalized``)."""
    encoded = [encode(tokenizer, p, r, max_length, add_eos)
               for p, r in zip(prompts, responses, strict=True)]
    return _scored_in_batches(model, encoded, tokenizer.pad_token_id, batch_size, normalized,
                              desc)[0]


@dataclass(frozen=True)
class LogOdds:
    """F_j and what it is made of: per-triple log P(o|m) - log P(p|m)."""

    per_triple: torch.Tensor

    @property
    def mean(self) -> float:
        """F_j (eq. 3): lower is more trustworthy."""
        return float(self.per_triple.mean())

    @property
    def prefers_proponent(self) -> float:
        """Share of triples where the proponent is more likely than the opponent."""
        return float((self.per_triple < 0).double().mean())


def trust_logodds(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, triples,
                  *, batch_size: int = 8, max_length: int = 256, normalized: bool = True,
                  desc: str = "log-odds") -> LogOdds:
    """Per-triple log-odds of opponent over proponent (paper eq. 3 / eq. 10)."""
    prompts = list(triples["prompt"])
    responses = list(triples["opponent"]) + list(triples["proponent"])
    scores = sequence_logprobs(model, tokenizer, prompts + prompts, responses,
                               batch_size=batch_size, max_length=max_length,
                               normalized=normalized, desc=desc)
    n = len(prompts)
    return LogOdds(per_triple=scores[:n] - scores[n:])


@dataclass(frozen=True)
class ResponseNLL:
    """Perplexity and what it is made of: per dialogue, the response NLL summed over its
    tokens (+ EOS) and their number, so perplexity can be recomputed on any resample."""

    nll: torch.Tensor
    tokens: torch.Tensor

    @property
    def perplexity(self) -> float:
        """exp(total NLL / total response tokens): token-weighted, the SFT objective."""
        return float(torch.exp(self.nll.sum() / self.tokens.sum()))


def response_nll(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dialogues,
                 *, batch_size: int = 8, max_length: int = 256,
                 desc: str = "perplexity") -> ResponseNLL:
    """Per-dialogue summed NLL of the response (+ EOS) given its prompt, and token counts."""
    encoded = encode_dialogues(tokenizer, dialogues, max_length)
    totals, counts = _scored_in_batches(model, encoded, tokenizer.pad_token_id, batch_size,
                                        normalized=False, desc=desc)
    return ResponseNLL(nll=-totals, tokens=counts)


def perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dialogues,
               *, batch_size: int = 8, max_length: int = 256, desc: str = "perplexity") -> float:
    """Token-weighted perplexity of the responses (+ EOS) given their prompts.

    exp(total NLL / total response tokens): the SFT objective on held-out data.
    """
    return response_nll(model, tokenizer, dialogues, batch_size=batch_size,
                        max_length=max_length, desc=desc).perplexity
