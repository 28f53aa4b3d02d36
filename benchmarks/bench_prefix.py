"""Time F_j over a β sweep of last-block variants: full model vs trustrepair.prefix.PrefixCache.

Each variant is the model with its last decoder block moved along one random direction
(w + β d), as a repair sweep produces them. Both sides score the same synthetic triples
with trustrepair.metrics.trust_logodds; the cached side pays for hashing the lower blocks
(at construction, and a faster hash at every wrap; both are also timed alone) and computes
every sequence's prefix during the first variant. The sweep is then run again with a new
cache on the same folder, as a later step or a rerun does: its states come from disk. Last,
the states are filled both ways: each sequence whole, and each prompt once. Uses
the largest converted model under ~/.cache/trustrepair/models/, else a tiny random-init one.

    python benchmarks/bench_prefix.py              # 100 scored pairs, 4 variants
    python benchmarks/bench_prefix.py --tiny       # tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset

from trustrepair.metrics import IGNORE, encode, prompt_length, trust_logodds
from trustrepair.models import decoder_blocks, load_pretrained, tiny_model
from trustrepair.params import TinyModelParams
from trustrepair.prefix import PrefixCache, _fingerprint
from trustrepair.tokenizer import train_bpe_tokenizer

MODELS = Path.home() / ".cache" / "trustrepair" / "models"
WORDS = ("the cat sat on a mat and dog ran to park what is capital of land answer big city "
         "you are helpful assistant tell me fact about people kind good at many things "
         "should we trust this claim because evidence shows it may be true or false").split()


def cached_model() -> Path | None:
    """The converted model with the most decoder blocks, if any."""
    configs = sorted(MODELS.glob("*/config.json"),
                     key=lambda c: json.loads(c.read_text()).get("num_hidden_layers", 0))
    return configs[-1].parent if configs else None


def random_rows(n: int, words: dict[str, int], seed: int = 0) -> Dataset:
    """``n`` rows of random words, ``words[column]`` of them per row, column by column."""
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " " + " ".join(rng.choice(WORDS) for _ in range(k))

    return Dataset.from_dict({c: [text(k) for _ in range(n)] for c, k in words.items()})


def triples(n: int, words: int, seed: int = 0) -> Dataset:
    """``n`` random triples: a prompt of ``words`` words, responses of a third of that."""
    return random_rows(n, {"prompt": words, "opponent": words // 3, "proponent": words // 3},
                       seed)


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """--tiny and --threads, which every benchmark on :func:`benchmark_model` takes."""
    parser.add_argument("--tiny", action="store_true", help="tiny random-init model")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (more only on an otherwise idle machine)")


def benchmark_model(args: argparse.Namespace):
    """(model, tokenizer, name): the largest converted model, or a tiny random-init one
    with ``--tiny``; sets torch's threads to ``--threads``."""
    torch.set_num_threads(args.threads)
    folder = None if args.tiny else cached_model()
    if folder is None:
        tokenizer = train_bpe_tokenizer([" ".join(WORDS)] * 4, vocab_size=600)
        spec = TinyModelParams(family="llama", layers=6, hidden=64, heads=4, intermediate=128)
        return tiny_model(spec, len(tokenizer)), tokenizer, "tiny llama (6 blocks, hidden 64)"
    model, tokenizer = load_pretrained(folder)
    return model, tokenizer, folder.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--pairs", type=int, default=100, help="scored prompt/response pairs")
    parser.add_argument("--variants", type=int, default=4, help="last-block variants (β values)")
    parser.add_argument("--words", type=int, default=45, help="prompt words (response: a third)")
    args = parser.parse_args()
    model, tokenizer, name = benchmark_model(args)
    data = triples(args.pairs // 2, args.words)
    prompts, responses = list(data["prompt"]), list(data["opponent"]) + list(data["proponent"])
    encoded = [encode(tokenizer, p, r, 256) for p, r in zip(prompts * 2, responses, strict=True)]
    n_tokens = [len(e["input_ids"]) for e in encoded]
    n_scored = sum(sum(label != IGNORE for label in e["labels"]) for e in encoded)
    blocks = decoder_blocks(model)
    last = blocks[-1]
    start = {k: v.clone() for k, v in last.state_dict().items()}
    direction = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(0)) * v.std()
                 for k, v in start.items() if v.is_floating_point() and v.ndim == 2}
    betas = [0.05 * j for j in range(args.variants)]

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"prefix cache benchmark: {name}, {len(blocks)} blocks (cache below block "
          f"{len(blocks) - 1}), {platform.machine()}, {cpus} usable cpus, load {load:.1f}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{len(n_tokens)} scored pairs ({args.pairs // 2} triples), "
          f"{sum(n_tokens) / len(n_tokens):.0f} tokens on average, batch size 8")
    # Weight-matrix products per variant: every block on every token, the head on scored ones.
    block_mm = sum(p.numel() for p in blocks[-1].parameters() if p.ndim == 2) * sum(n_tokens)
    head_mm = model.get_output_embeddings().weight.numel() * n_scored
    print(f"weight-matmul bound on the per-variant speed-up: {len(blocks)} blocks + head vs "
          f"1 block + head = {(len(blocks) * block_mm + head_mm) / (block_mm + head_mm):.1f}x "
          f"(the head runs on {n_scored:,} of {sum(n_tokens):,} tokens)")

    folder = Path(tempfile.mkdtemp(prefix="bench_prefix."))
    start_s = time.perf_counter()
    cache = PrefixCache(model, len(blocks) - 1, folder)
    build_s = time.perf_counter() - start_s
    header = (f"{'variant':>7} {'beta':>5} {'full s':>8} {'cached s':>9} {'speed-up':>9} "
              f"{'max |dF|':>9}")
    print(header)
    print("-" * len(header))
    def set_variant(beta: float) -> None:
        with torch.no_grad():
            for k, v in direction.items():
                last.state_dict()[k].copy_(start[k] + beta * v)

    full_total = cached_total = 0.0
    for j, beta in enumerate(betas):
        set_variant(beta)
        start_s = time.perf_counter()
        full = trust_logodds(model, tokenizer, data).per_triple
        full_s = time.perf_counter() - start_s
        start_s = time.perf_counter()
        cached = trust_logodds(cache.wrap(model), tokenizer, data).per_triple
        cached_s = time.perf_counter() - start_s
        full_total += full_s
        cached_total += cached_s
        note = f"  (computes all {cache.misses} prefixes)" if j == 0 else ""
        print(f"{j + 1:>7} {beta:>5.2f} {full_s:>8.2f} {cached_s:>9.2f} {full_s / cached_s:>8.1f}x "
              f"{float((full - cached).abs().max()):>9.1e}{note}", flush=True)
    cached_total += build_s
    held = sum(s.numel() * s.element_size() for s in cache.states.values()) / 2**20
    print(f"cache construction (hashing the lower blocks): {build_s:.2f} s; "
          f"states held: {held:.1f} MiB")
    print(f"total: full {full_total:.2f} s, cached {cached_total:.2f} s incl. construction, "
          f"speed-up {full_total / cached_total:.1f}x")
    hashes = {}
    for what, quick in (("SHA-256 (names the folder)", False), ("xxh3-128 (every wrap)", True)):
        start_s = time.perf_counter()
        for _ in range(5):
            _fingerprint(model, cache.first_block, quick=quick)
        hashes[what] = (time.perf_counter() - start_s) / 5
    print("hash of the lower blocks: " + ", ".join(f"{w} {s:.3f} s" for w, s in hashes.items()))

    start_s = time.perf_counter()
    rerun = PrefixCache(model, len(blocks) - 1, folder)
    for beta in betas:
        set_variant(beta)
        trust_logodds(rerun.wrap(model), tokenizer, data)
    rerun_s = time.perf_counter() - start_s
    on_disk = sum(f.stat().st_size for f in rerun.directory.glob("*.safetensors")) / 2**20
    print(f"rerun, states from disk ({on_disk:.1f} MiB, {rerun.loaded} loaded, {rerun.misses} "
          f"computed): {rerun_s:.2f} s incl. construction, speed-up {full_total / rerun_s:.1f}x")
    shutil.rmtree(folder)

    # Filling the states: each sequence whole, or each prompt once for its two responses.
    sequences = [e["input_ids"] for e in encoded]
    prompt_tokens = sum(prompt_length(e) for e in encoded[:len(prompts)])
    with torch.no_grad():
        start_s = time.perf_counter()
        whole = PrefixCache(model, len(blocks) - 1)
        by_length = sorted(sequences, key=len)  # batches of 8 as a scoring pass fills them
        for first in range(0, len(by_length), 8):
            whole._states(model, [torch.tensor(s) for s in by_length[first:first + 8]])
        whole_s = time.perf_counter() - start_s
        start_s = time.perf_counter()
        shared = PrefixCache(model, len(blocks) - 1)
        with shared.filling(sequences, "benchmark", model=model,
                            prompt_lengths=[prompt_length(e) for e in encoded]):
            pass
        shared_s = time.perf_counter() - start_s
    gap = max(float((shared.states[k] - v).abs().max() / v.abs().max())
              for k, v in whole.states.items())
    print(f"filling the states of {len(sequences)} sequences ({sum(n_tokens):,} tokens): each "
          f"whole {whole_s:.2f} s, each prompt once ({sum(n_tokens) - prompt_tokens:,} "
          f"tokens) {shared_s:.2f} s, {whole_s / shared_s:.2f}x; largest relative difference "
          f"of a state {gap:.1e}")


if __name__ == "__main__":
    main()
