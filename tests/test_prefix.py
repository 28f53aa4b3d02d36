"""The prefix cache scores every variant exactly as the full model does, and only where safe."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from trustrepair import models
from trustrepair.experiment import Experiment
from trustrepair.metrics import collate, encode, perplexity, response_logits, trust_logodds
from trustrepair.models import decoder_blocks
from trustrepair.prefix import PrefixCache
from trustrepair.shared_prompts import can_share_prompts

from .conftest import smoke_params

TRIPLES = Dataset.from_dict({
    "prompt": ["what is the capital of the land ?", "tell me a fact about people", "the cat"],
    "opponent": [" the big city", " people are kind", " sat on the mat and the dog ran"],
    "proponent": [" the answer is the city", " people are good at many things", " ran"],
})
DIALOGUES = Dataset.from_dict({
    "prompt": ["you are a helpful assistant . tell me a fact", "the dog", "what is the land ?"],
    "response": [" people are kind and good", " ran to the park", " the big city"],
})
REL = 1e-5


def _rel(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest reference magnitude."""
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


def _with_noise(model, block: int):
    """A copy of ``model`` with noise added to one weight of decoder block ``block``."""
    variant = copy.deepcopy(model)
    weight = next(decoder_blocks(variant)[block].parameters())
    with torch.no_grad():
        weight.add_(0.5 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    return variant


def _encoded(tokenizer) -> list[dict[str, list[int]]]:
    """Sequences of different lengths."""
    texts = ["the cat sat on the mat and the dog ran to the park", "people", "what is the land ?"]
    return [encode(tokenizer, t, " the", 64) for t in texts]


def _logits(model, batch) -> torch.Tensor:
    """Logits of a collated batch, labels left out."""
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("first_block", [1, 2])
def test_logits_match_the_full_model(tiny_lm, tokenizer, first_block) -> None:
    encoded = _encoded(tokenizer)
    cache = PrefixCache(tiny_lm, first_block)
    for e in encoded:  # states computed unpadded, then used in a padded batch
        _logits(cache.wrap(tiny_lm), collate([e], tokenizer.pad_token_id))
    batch = collate(encoded, tokenizer.pad_token_id)
    real = batch["attention_mask"].bool()
    assert not real.all()
    got = _logits(cache.wrap(tiny_lm), batch)
    assert cache.misses == len(encoded)
    assert _rel(got[real], _logits(tiny_lm, batch)[real]) <= REL


def test_sliding_window_blocks_get_their_own_mask(tokenizer) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                         use_sliding_window=True, sliding_window=3, max_window_layers=1)
    model = Qwen2ForCausalLM(config).eval()
    assert config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    batch = collate(_encoded(tokenizer), tokenizer.pad_token_id)
    real = batch["attention_mask"].bool()
    for first_block in (1, 2):
        got = _logits(PrefixCache(model, first_block).wrap(model), batch)
        assert _rel(got[real], _logits(model, batch)[real]) <= REL


def test_metrics_match_for_the_model_and_a_repaired_variant(tiny_lm, tokenizer) -> None:
    """In float64: the whole model shares repeated prompts' keys and values, the wrapped one
    cannot, and their float32 roundings differ by more than the differences looked for."""
    tiny_lm = copy.deepcopy(tiny_lm).double()
    cache = PrefixCache(tiny_lm, len(decoder_blocks(tiny_lm)) - 1)
    repaired = _with_noise(tiny_lm, -1)
    for model in (tiny_lm, repaired):
        wrapped = cache.wrap(model)
        want, got = (trust_logodds(m, tokenizer, TRIPLES, batch_size=2).per_triple
                     for m in (model, wrapped))
        assert _rel(got, want) <= REL
        assert perplexity(wrapped, tokenizer, DIALOGUES, batch_size=2) == pytest.approx(
            perplexity(model, tokenizer, DIALOGUES, batch_size=2), rel=REL)
    assert not torch.allclose(trust_logodds(repaired, tokenizer, TRIPLES).per_triple,
                              trust_logodds(tiny_lm, tokenizer, TRIPLES).per_triple)


def test_each_sequence_prefix_is_computed_once(tiny_lm, tokenizer) -> None:
    cache = PrefixCache(tiny_lm, 2)
    for model in (tiny_lm, _with_noise(tiny_lm, 2), _with_noise(tiny_lm, 2)):
        trust_logodds(cache.wrap(model), tokenizer, TRIPLES, batch_size=4)
    distinct = {tuple(encode(tokenizer, p, r, 256)["input_ids"])
                for p, o, q in zip(TRIPLES["prompt"], TRIPLES["opponent"], TRIPLES["proponent"],
                                   strict=True) for r in (o, q)}
    assert cache.misses == len(cache.states) == len(distinct)


def test_features_through_the_cache_are_the_models_and_leave_its_states(tiny_lm,
                                                                       tokenizer) -> None:
    """Step 02's features pass fills the cache its factor fit reads: the features do not
    change, and the fit's sequences need no lower block again."""
    from trustrepair.features import mean_pooled_hidden_states
    from trustrepair.metrics import encode_dialogues

    cache = PrefixCache(tiny_lm, 2)
    whole = mean_pooled_hidden_states(tiny_lm, tokenizer, DIALOGUES, max_length=64, batch_size=2)
    cached = mean_pooled_hidden_states(cache.wrap(tiny_lm), tokenizer, DIALOGUES, max_length=64,
                                       batch_size=2)
    assert _rel(cached, whole) < REL
    assert cache.misses == len(DIALOGUES)
    for item in encode_dialogues(tokenizer, DIALOGUES, 64):
        cache._states(tiny_lm, [torch.tensor(item["input_ids"])])
    assert cache.misses == len(DIALOGUES)


def test_a_decoder_through_the_cache_gives_the_models_states_and_is_restored(tiny_lm,
                                                                            tokenizer) -> None:
    from trustrepair.prefix import decoder_through

    batch = collate(_encoded(tokenizer), tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        whole = tiny_lm.base_model(**inputs).last_hidden_state
        with decoder_through(PrefixCache(tiny_lm, 2), tiny_lm):
            cached = tiny_lm.base_model(**inputs, use_cache=False).last_hidden_state
            with pytest.raises(ValueError, match="position_ids"):
                tiny_lm.base_model(**inputs, position_ids=torch.zeros_like(batch["input_ids"]))
    mask = batch["attention_mask"].bool()
    assert _rel(cached[mask], whole[mask]) < REL
    assert "forward" not in vars(tiny_lm.base_model)


def test_wrapped_model_acts_like_a_module(tiny_lm) -> None:
    wrapped = PrefixCache(tiny_lm, 1).wrap(tiny_lm)
    assert next(wrapped.parameters()) is next(tiny_lm.parameters())
    assert wrapped.train().training and tiny_lm.training
    assert not wrapped.eval().training and not tiny_lm.training


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_scoring_through_the_cache_leaves_the_models_mode_alone(tiny_lm, tokenizer, mode) -> None:
    model = copy.deepcopy(tiny_lm).train(mode == "train")
    trust_logodds(PrefixCache(model, 1).wrap(model), tokenizer, TRIPLES)
    assert model.training == (mode == "train")


@pytest.mark.parametrize("block", [0, 1])
def test_a_changed_lower_block_is_refused(tiny_lm, block) -> None:
    cache = PrefixCache(tiny_lm, 2)
    with pytest.raises(ValueError, match="differ"):
        cache.wrap(_with_noise(tiny_lm, block))
    embedding_changed = copy.deepcopy(tiny_lm)
    with torch.no_grad():
        embedding_changed.get_input_embeddings().weight[5] += 1.0
    with pytest.raises(ValueError, match="differ"):
        cache.wrap(embedding_changed)


@pytest.mark.parametrize("first_block", [0, 3, -1])
def test_a_first_block_outside_the_model_is_refused(tiny_lm, first_block) -> None:
    with pytest.raises(ValueError, match="first_block"):
        PrefixCache(tiny_lm, first_block)


def test_left_padding_and_other_architectures_are_refused(tiny_lm) -> None:
    wrapped = PrefixCache(tiny_lm, 1).wrap(tiny_lm)
    with pytest.raises(ValueError, match="right-padded"):
        wrapped(input_ids=torch.tensor([[0, 5, 6]]), attention_mask=torch.tensor([[0, 1, 1]]))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="model types"):
        PrefixCache(gpt2, 1)


@pytest.mark.parametrize("split", ["family", "cached", "whole forward"])
def test_response_logits_are_the_full_logits_at_response_positions(tiny_lm, tokenizer, split,
                                                                    monkeypatch) -> None:
    """The LM head runs on response positions only, and gives the logits it gave there."""
    batch = collate(_encoded(tokenizer) + [encode(tokenizer, "the", " cat sat on the mat", 64)],
                    tokenizer.pad_token_id)
    model = PrefixCache(tiny_lm, 1).wrap(tiny_lm) if split == "cached" else tiny_lm
    if split == "whole forward":  # a family outside PLAIN_LM_HEAD
        monkeypatch.setattr(models, "PLAIN_LM_HEAD", frozenset())
    with torch.no_grad():
        got, labels, mask = response_logits(model, batch)
    want = _logits(tiny_lm, batch)[:, :-1][mask]
    assert mask.sum() == (batch["labels"][:, 1:] >= 0).sum() < mask.numel() // 2
    assert got.shape == want.shape
    assert _rel(got, want) <= REL
    assert torch.equal(labels, batch["labels"][:, 1:][mask])


def test_states_on_disk_are_read_back_instead_of_recomputed(tiny_lm, tokenizer, tmp_path,
                                                            capsys) -> None:
    first = PrefixCache(tiny_lm, 2, tmp_path)
    want = trust_logodds(first.wrap(tiny_lm), tokenizer, TRIPLES, batch_size=2).per_triple
    announced = capsys.readouterr().out
    assert f"{first.misses} sequences of {2 * len(TRIPLES)} to compute" in announced
    assert str(first.directory) in announced
    assert first.misses > 0 and len(list(first.directory.glob("*.safetensors"))) == 1

    again = PrefixCache(tiny_lm, 2, tmp_path)  # a later step or rerun: a new process
    got = trust_logodds(again.wrap(tiny_lm), tokenizer, TRIPLES, batch_size=2).per_triple
    assert again.misses == 0 and again.loaded == first.misses
    assert torch.equal(got, want)
    assert "to compute" not in capsys.readouterr().out


def test_a_model_with_other_lower_blocks_gets_its_own_folder(tiny_lm, tokenizer, tmp_path) -> None:
    cache = PrefixCache(tiny_lm, 2, tmp_path)
    trust_logodds(cache.wrap(tiny_lm), tokenizer, TRIPLES)
    other_model = _with_noise(tiny_lm, 1)
    other = PrefixCache(other_model, 2, tmp_path)
    assert other.directory != cache.directory
    trust_logodds(other.wrap(other_model), tokenizer, TRIPLES)
    assert other.loaded == 0 and other.misses == cache.misses
    assert PrefixCache(tiny_lm, 1, tmp_path).directory not in (cache.directory, other.directory)


def test_an_interrupted_pass_keeps_the_states_it_computed(tiny_lm, tokenizer, tmp_path) -> None:
    encoded = _encoded(tokenizer)
    cache = PrefixCache(tiny_lm, 1, tmp_path)
    with pytest.raises(KeyboardInterrupt), cache.filling([e["input_ids"] for e in encoded], "x"):
        _logits(cache.wrap(tiny_lm), collate(encoded[:2], tokenizer.pad_token_id))
        raise KeyboardInterrupt
    resumed = PrefixCache(tiny_lm, 1, tmp_path)
    _logits(resumed.wrap(tiny_lm), collate(encoded, tokenizer.pad_token_id))
    assert (resumed.loaded, resumed.misses) == (2, 1)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["scaled", "truncated"])
def test_an_altered_shard_is_recomputed_and_named(tiny_lm, tokenizer, tmp_path, capsys,
                                                  damage) -> None:
    first = PrefixCache(tiny_lm, 2, tmp_path)
    want = trust_logodds(first.wrap(tiny_lm), tokenizer, TRIPLES, batch_size=2).per_triple
    shard = next(first.directory.glob("*.safetensors"))
    if damage == "scaled":  # the states of a wrong model, in a well-formed file
        save_file({k: v * 1.05 for k, v in load_file(shard).items()}, str(shard))
    else:
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    capsys.readouterr()
    again = PrefixCache(tiny_lm, 2, tmp_path)
    got = trust_logodds(again.wrap(tiny_lm), tokenizer, TRIPLES, batch_size=2).per_triple
    assert torch.equal(got, want), "recomputed, not read from the altered shard"
    assert again.loaded == 0 and again.misses == first.misses
    out = capsys.readouterr().out
    assert f"prefix cache: {shard} cannot be trusted" in out and "recomputed" in out
    assert PrefixCache(tiny_lm, 2, tmp_path)._shards, "the recomputed states were saved again"


def test_models_of_one_run_with_the_same_lower_blocks_share_one_cache(tmp_path) -> None:
    """Step 08 loads the post-SFT, repaired and baseline models one after another: the
    states one read or computed serve the next, not read from disk again."""
    exp = Experiment(smoke_params(tmp_path))
    model, _ = exp.models.load()
    cache = exp.models.prefix_cache(model)
    assert cache is not None and cache.admits(model)
    assert exp.models.prefix_cache(_with_noise(model, len(decoder_blocks(model)) - 1)) is cache
    other = _with_noise(model, 0)
    fresh = exp.models.prefix_cache(other)
    assert fresh is not cache and fresh.admits(other) and not fresh.admits(model)


def test_responses_to_a_shared_prompt_get_the_states_of_their_whole_sequence(
        tiny_lm, tokenizer, monkeypatch) -> None:
    """Each prompt of TRIPLES runs once for its two responses; every per-triple value read
    through those states equals the one read through states computed sequence by sequence."""
    computed, fill = [], PrefixCache._fill
    monkeypatch.setattr(PrefixCache, "_fill", lambda self, model, sequences: computed.append(
        len(sequences)) or fill(self, model, sequences))
    shared = PrefixCache(tiny_lm, 2)
    got = trust_logodds(shared.wrap(tiny_lm), tokenizer, TRIPLES, batch_size=2).per_triple
    assert shared.misses == 2 * len(TRIPLES)
    assert sum(computed) == (0 if can_share_prompts(tiny_lm) else shared.misses)
    plain = PrefixCache(tiny_lm, 2)
    plain._states(tiny_lm, [torch.tensor(encode(tokenizer, p, r, 256)["input_ids"])
                            for p, o, q in zip(TRIPLES["prompt"], TRIPLES["opponent"],
                                               TRIPLES["proponent"], strict=True)
                            for r in (o, q)])
    want = trust_logodds(plain.wrap(tiny_lm), tokenizer, TRIPLES, batch_size=2).per_triple
    assert plain.misses == shared.misses and set(plain.states) == set(shared.states)
    assert float((got - want).abs().max()) <= 1e-6
    for key, state in plain.states.items():
        assert _rel(shared.states[key], state) <= REL
