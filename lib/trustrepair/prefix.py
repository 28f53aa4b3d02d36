"""Evaluate many repaired variants of one model without recomputing their shared blocks.

A repair changes only the last decoder blocks, so every variant (β sweep, baselines)
computes the same hidden states up to the first changed block. :class:`PrefixCache`
keeps those states per token sequence, and :meth:`PrefixCache.wrap` returns a module
that the :mod:`trustrepair.metrics` code scores like the model itself while running only
the blocks from ``first_block`` on. The cached states are constants: gradients reach the
upper blocks (the baselines train through the cache) but never the embedding or the lower
blocks, so only a model whose lower blocks do not train may read from it. Batches must
be right-padded, as :func:`trustrepair.metrics.collate` pads them.

Given a ``directory``, the states are also kept on disk as safetensors shards, one per
:func:`filling` (a dataset), in a folder named by the hash of the weights below
``first_block``: later steps and reruns of the same model read them instead of
recomputing, and a different model can never read them. Each shard carries the checksum
it was written with; one that was altered or truncated since is discarded and recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import xxhash
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from trustrepair.artifacts import (
    atomic_path,
    checksum_problem,
    discard,
    format_size,
    write_checksum,
)
from trustrepair.families import FAMILIES
from trustrepair.models import decoder_blocks
from trustrepair.profiling import phase
from trustrepair.shared_prompts import can_share_prompts, states_on_shared_prompts


def _family(model: nn.Module) -> str:
    """The model type, if it is a registered family (:mod:`trustrepair.families`): each
    keeps ``rotary_emb`` on its base model and calls its blocks with the same masks,
    position ids and rotary embeddings."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(f"PrefixCache supports model types {list(FAMILIES)}, "
                         f"not {model_type!r} ({type(model).__name__})")
    return model_type


def _fingerprint(model: PreTrainedModel, first_block: int, quick: bool = False) -> str:
    """Hash of every tensor the cached states depend on: embedding, rotary, lower blocks.

    SHA-256 names the cache's folder on disk, as it always has, so folders already written
    stay readable. ``quick`` hashes with xxh3-128 instead, about 15x faster here, for
    :meth:`PrefixCache.wrap`'s check: a sweep wraps hundreds of copies of one model, and
    SHA-256 over each one's ~400 MB of lower blocks took a quarter of a small run's step 05.
    """
    digest = xxhash.xxh3_128() if quick else hashlib.sha256()
    lower = [model.get_input_embeddings(), model.base_model.rotary_emb,
             *decoder_blocks(model)[:first_block]]
    for i, module in enumerate(lower):
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            digest.update(f"{i}.{name}{tuple(t.shape)}{t.dtype};".encode())
            digest.update(t.detach().reshape(-1).cpu().view(torch.uint8).numpy())
    return digest.hexdigest()


def _key(token_ids: Sequence[int] | torch.Tensor) -> str:
    """Name of one unpadded token sequence's states, in RAM and in a shard."""
    ids = np.asarray(token_ids.cpu() if isinstance(token_ids, torch.Tensor) else token_ids,
                     dtype=np.int64)
    return hashlib.blake2b(ids.tobytes(), digest_size=16).hexdigest()


def _run_blocks(model: PreTrainedModel, hidden: torch.Tensor, attention_mask: torch.Tensor,
                first: int, stop: int) -> torch.Tensor:
    """Blocks ``[first, stop)`` applied as the families' ``Model.forward`` applies them (no
    KV cache): each block gets the mask of its attention type (``config.layer_types``,
    full or sliding-window, as Qwen2 may mix them)."""
    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    blocks = decoder_blocks(model)
    types = getattr(model.config, "layer_types", None) or ["full_attention"] * len(blocks)
    inputs = dict(config=model.config, inputs_embeds=hidden, attention_mask=attention_mask,
                  past_key_values=None, position_ids=position_ids)
    masks = {"full_attention": create_causal_mask(**inputs)}
    if "sliding_attention" in types[first:stop]:
        masks["sliding_attention"] = create_sliding_window_causal_mask(**inputs)
    rotary = model.base_model.rotary_emb(hidden, position_ids=position_ids)
    for i in range(first, stop):
        hidden = blocks[i](hidden, attention_mask=masks[types[i]], position_ids=position_ids,
                           position_embeddings=rotary)
    return hidden


def for_tracked_blocks(model: PreTrainedModel, tracked_blocks: int,
                       directory: str | Path | None = None) -> PrefixCache | None:
    """A cache below the last ``tracked_blocks`` blocks, or None for a family it cannot split
    (then every variant runs the whole model)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    first_block = len(decoder_blocks(model)) - tracked_blocks
    if model_type not in FAMILIES or first_block < 1:
        return None
    return PrefixCache(model, first_block, directory)


def through(cache: PrefixCache | None, model: PreTrainedModel) -> nn.Module:
    """``model`` reading from ``cache`` when there is one, else ``model`` itself."""
    return model if cache is None else cache.wrap(model)


@contextlib.contextmanager
def decoder_through(cache: PrefixCache | None, *models: PreTrainedModel) -> Iterator[None]:
    """Within the block, each of ``models``' decoders (``model.base_model``) reads the lower
    blocks' states from ``cache``: for a trainer that calls the decoder itself and applies
    its own LM head, as TRL's fused head does. Nothing changes for ``cache`` None."""
    if cache is None:
        yield
        return
    decoders = []
    for model in models:
        wrapped, decoder = cache.wrap(model), model.base_model

        def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    use_cache: bool | None = None, wrapped: nn.Module = wrapped,
                    **other) -> BaseModelOutputWithPast:
            unused = sorted(k for k, v in other.items() if v is not None and v is not False)
            if use_cache or unused:
                raise ValueError(f"a decoder reading a prefix cache takes input_ids and "
                                 f"attention_mask only, not {unused or ['use_cache=True']}")
            return BaseModelOutputWithPast(
                last_hidden_state=wrapped.last_hidden_state(input_ids, attention_mask))

        decoder.forward = forward  # an instance attribute: nn.Module.__call__ finds it first
        decoders.append(decoder)
    try:
        yield
    finally:
        for decoder in decoders:
            del decoder.forward


def reads_cache(model: nn.Module) -> bool:
    """Whether ``model`` runs its upper blocks on a cache's states (:meth:`PrefixCache.wrap`)."""
    return isinstance(model, _CachedPrefixLM)


def filling(source: PrefixCache | nn.Module | None, sequences: Sequence[Sequence[int]],
            what: str, prompt_lengths: Sequence[int] | None = None, batch_size: int = 8, *,
            model: PreTrainedModel | None = None) -> contextlib.AbstractContextManager[None]:
    """:meth:`PrefixCache.filling` of a cache, or of the cache a model reads from; nothing
    for a plain model or None. Given ``prompt_lengths`` and a whole model (``model``, or
    the one ``source`` wraps), responses to shared prompts get their states first."""
    if isinstance(source, _CachedPrefixLM):
        source, model = source.cache, source.model
    if isinstance(source, PrefixCache):
        return source.filling(sequences, what, model=model, prompt_lengths=prompt_lengths,
                              batch_size=batch_size)
    return contextlib.nullcontext()


class PrefixCache:
    """Hidden states entering decoder block `first_block`, computed once per token sequence.

    The states live on the CPU, keyed by a hash of the unpadded token ids, and in
    ``directory`` when one is given. ``misses`` counts the sequences whose prefix was
    computed, ``loaded`` those read from disk. Which model computes a miss does not
    matter: :meth:`wrap` admits only models whose embedding, rotary embedding and lower
    blocks hash to those of the model given here, so the cache holds no model of its own.
    """

    def __init__(self, model: PreTrainedModel, first_block: int,
                 directory: str | Path | None = None):
        self.model_type = _family(model)
        self.n_blocks = len(decoder_blocks(model))
        if not 1 <= first_block <= self.n_blocks - 1:
            raise ValueError(f"first_block={first_block} must lie in [1, {self.n_blocks - 1}] "
                             f"for a model with {self.n_blocks} decoder blocks")
        self.first_block = first_block
        self.fingerprint = _fingerprint(model, first_block)
        self._quick_fingerprint = _fingerprint(model, first_block, quick=True)
        embed = model.get_input_embeddings().weight
        self.state_bytes_per_token = embed.shape[1] * embed.element_size()
        self.states: dict[str, torch.Tensor] = {}
        self.misses = self.loaded = 0
        self.directory = (None if directory is None else Path(directory).expanduser()
                          / f"{self.model_type}-{self.fingerprint[:16]}-block{first_block}")
        self._shards: dict[str, Path] = {}  # key -> shard holding it, not yet in RAM
        self._unsaved: set[str] = set()
        if self.directory is not None and self.directory.is_dir():
            for shard in sorted(self.directory.glob("*.safetensors")):
                try:
                    with safe_open(shard, framework="pt") as f:
                        self._shards.update(dict.fromkeys(f.keys(), shard))
                except (OSError, SafetensorError):
                    self._discard(shard, "its header cannot be read")

    @contextlib.contextmanager
    def filling(self, sequences: Sequence[Sequence[int]], what: str, *,
                model: PreTrainedModel | None = None,
                prompt_lengths: Sequence[int] | None = None,
                batch_size: int = 8) -> Iterator[None]:
        """Around a pass over ``sequences``: print the size of the states it will compute,
        then write them to one shard, also when the pass is interrupted (each state is
        whole, so a rerun resumes from them).

        Given the ``model`` and each sequence's ``prompt_lengths``, the new states of
        responses that share a prompt are computed first, each prompt run once
        (:func:`trustrepair.shared_prompts.states_on_shared_prompts`): every ETHICS item,
        every stereotype of a group and every option of a held-out item repeats its prompt.
        """
        lengths = {_key(s): len(s) for s in sequences}
        sharing = model is not None and prompt_lengths is not None
        if sharing:  # before choosing what to compute: a damaged shard's states are new
            self._load_shards(list(lengths))
        new = {k: n for k, n in lengths.items() if k not in self.states and k not in self._shards}
        if new:
            tokens = sum(new.values())
            where = f"into {self.directory}" if self.directory else "in RAM"
            print(f"prefix cache, {what}: {len(new):,} sequences of {len(sequences):,} to "
                  f"compute, {tokens:,} tokens, "
                  f"{format_size(tokens * self.state_bytes_per_token)} {where}", flush=True)
        try:
            if new and sharing:
                self._fill_on_shared_prompts(model, sequences, prompt_lengths, batch_size, what)
            yield
        finally:
            self._save(set(lengths))  # also states recomputed for a discarded shard

    def _fill_on_shared_prompts(self, model: PreTrainedModel,
                                sequences: Sequence[Sequence[int]],
                                prompt_lengths: Sequence[int], batch_size: int,
                                what: str) -> None:
        """Compute the states of the new sequences whose prompt another new one shares,
        each prompt once; the rest are computed as the pass reaches them (:meth:`_fill`)."""
        if not can_share_prompts(model):
            return
        new: dict[str, tuple[list[int], int]] = {}
        for seq, n in zip(sequences, prompt_lengths, strict=True):
            key = _key(seq)
            if n >= 1 and key not in self.states and key not in self._shards:
                new.setdefault(key, ([int(t) for t in seq], n))
        prompts = Counter(tuple(seq[:n]) for seq, n in new.values())
        todo = [(key, seq, n) for key, (seq, n) in new.items() if prompts[tuple(seq[:n])] > 1]
        if not todo:
            return
        was_training = model.training
        model.eval()  # dropout must not become part of a constant
        with torch.no_grad(), phase("prefix cache: lower blocks"):
            for i, state in states_on_shared_prompts(model, [seq for _, seq, _ in todo],
                                                     [n for *_, n in todo], self.first_block,
                                                     batch_size, what):
                self.states[todo[i][0]] = state.cpu()
        model.train(was_training)
        self._unsaved.update(key for key, *_ in todo)
        self.misses += len(todo)

    def _save(self, keys: set[str]) -> None:
        """Write the computed, unsaved states of ``keys`` as one shard."""
        todo = self._unsaved & keys
        if self.directory is None or not todo:
            return
        names = sorted(todo)
        digest = hashlib.blake2b("".join(names).encode(), digest_size=16).hexdigest()
        shard = self.directory / f"{digest}.safetensors"
        with atomic_path(shard) as tmp:
            save_file({k: self.states[k].contiguous() for k in names}, str(tmp))
        write_checksum(shard)
        self._unsaved -= todo

    def _discard(self, shard: Path, problem: str) -> None:
        """Forget a shard that cannot be trusted; its states are computed again."""
        print(f"prefix cache: {shard} cannot be trusted ({problem}): discarded, its states "
              f"will be recomputed", flush=True)
        discard(shard)
        self._shards = {k: s for k, s in self._shards.items() if s != shard}

    def _load_shards(self, keys: Sequence[str]) -> None:
        """Read into RAM the shards that hold states of ``keys``; one that fails its checksum
        is discarded, so its states count as not computed."""
        for shard in dict.fromkeys(self._shards[k] for k in keys
                                   if k not in self.states and k in self._shards):
            problem = checksum_problem(shard)
            if problem is not None:
                self._discard(shard, problem)
                continue
            states = load_file(shard)
            self.states.update(states)
            self.loaded += len(states)
            for k in states:
                self._shards.pop(k, None)

    def _states(self, model: PreTrainedModel, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        """The states of unpadded token rows: from RAM, else from their shard on disk, else
        computed by ``model`` (in one batch)."""
        keys = [_key(row) for row in rows]
        self._load_shards(keys)
        missing = {k: row for k, row in zip(keys, rows, strict=True) if k not in self.states}
        if missing:
            self._fill(model, missing)
        return [self.states[k] for k in keys]

    def check_below(self, model: PreTrainedModel, modules: list[str]) -> None:
        """Refuse a cache that holds the output of a module that is trained or tracked:
        no gradient would reach it."""
        lower = {id(m) for block in decoder_blocks(model)[:self.first_block]
                 for m in block.modules()}
        named = dict(model.named_modules())
        inside = [m for m in modules if id(named[m]) in lower]
        if inside:
            raise ValueError(f"the prefix cache ends at block {self.first_block} but {inside[0]} "
                             f"lies below it, so no gradient would reach it: build the cache "
                             f"below the first trained or tracked block")

    def admits(self, model: PreTrainedModel) -> bool:
        """Whether ``model``'s embedding and blocks [0, ``first_block``) are those the cache
        was built for, so that its states are ``model``'s."""
        return (getattr(getattr(model, "config", None), "model_type", None) == self.model_type
                and len(decoder_blocks(model)) == self.n_blocks
                and _fingerprint(model, self.first_block, quick=True) == self._quick_fingerprint)

    def wrap(self, model: PreTrainedModel) -> nn.Module:
        """``model`` reading its lower-block states from this cache; refused where they differ."""
        if _family(model) != self.model_type or len(decoder_blocks(model)) != self.n_blocks:
            raise ValueError(f"the cache is for a {self.n_blocks}-block {self.model_type} model")
        if not self.admits(model):
            raise ValueError(f"this model's embedding or blocks [0, {self.first_block}) differ "
                             f"from those the cache was built for: its states would be wrong")
        return _CachedPrefixLM(self, model)

    def _fill(self, model: PreTrainedModel, sequences: dict[str, torch.Tensor]) -> None:
        """Compute and store the states of ``sequences`` (key -> token ids) in one
        right-padded batch."""
        device = next(model.parameters()).device
        width = max(len(s) for s in sequences.values())
        input_ids = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
        attention_mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(sequences.values()):
            input_ids[row, :len(seq)] = seq
            attention_mask[row, :len(seq)] = 1
        was_training = model.training
        model.eval()  # dropout must not become part of a constant
        with torch.no_grad(), phase("prefix cache: lower blocks"):
            hidden = _run_blocks(model, model.get_input_embeddings()(input_ids), attention_mask,
                                 0, self.first_block)
        model.train(was_training)
        for row, (key, seq) in enumerate(sequences.items()):
            self.states[key] = hidden[row, :len(seq)].cpu()
        self._unsaved.update(sequences)
        self.misses += len(sequences)


class _CachedPrefixLM(nn.Module):
    """A causal LM whose forward pass starts at the cache's ``first_block``."""

    def __init__(self, cache: PrefixCache, model: PreTrainedModel):
        super().__init__()
        self.cache = cache
        self.model = model  # a submodule: parameters(), eval() and train() reach it
        # Start in the model's mode, so that code which saves and restores ``training``
        # around a pass leaves the model as it found it.
        self.train(model.training)

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> CausalLMOutputWithPast:
        hidden = self.last_hidden_state(input_ids, attention_mask)
        return CausalLMOutputWithPast(logits=self.model.get_output_embeddings()(hidden))

    def split_lm_head(self) -> tuple[Callable[..., torch.Tensor], nn.Module]:
        """(body, head) as :func:`trustrepair.models.split_lm_head` splits a whole model."""
        return self.last_hidden_state, self.model.get_output_embeddings()

    def last_hidden_state(self, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm output: the upper blocks run on the cached states of the lower ones."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.sum(1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        if not torch.equal(attention_mask.bool(), positions < lengths[:, None]):
            raise ValueError("PrefixCache needs right-padded batches (attention mask 1...1 0...0)")
        rows = [row[:n] for row, n in zip(input_ids, lengths.tolist(), strict=True)]
        states = self.cache._states(self.model, rows)
        embed = self.model.get_input_embeddings().weight
        hidden = torch.zeros((*input_ids.shape, embed.shape[1]), dtype=embed.dtype,
                             device=embed.device)
        for row, state in enumerate(states):
            hidden[row, :len(state)] = state
        hidden = _run_blocks(self.model, hidden, attention_mask, self.cache.first_block,
                             self.cache.n_blocks)
        return getattr(self.model.base_model, FAMILIES[self.cache.model_type].final_norm)(hidden)
