"""How many tokens the lower blocks run for a config's trust triples and held-out items:
each distinct sequence whole, against each shared prompt once (``PrefixCache.filling`` with
prompt lengths). Counts tokens only; nothing is scored.

    python benchmarks/shared_prompt_tokens.py params/default.yaml
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from transformers import AutoTokenizer

from trustrepair import heldout, metrics
from trustrepair.experiment import Experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params")
    exp = Experiment.from_file(parser.parse_args().params)
    tokenizer = AutoTokenizer.from_pretrained(exp.models.base_dir)
    passes: dict[str, list[dict]] = {}
    current = [""]

    def record(model, encoded, pad_token_id, batch_size, normalized, desc):
        passes.setdefault(current[0], []).extend(encoded)
        return torch.zeros(len(encoded), dtype=torch.float64), torch.ones(len(encoded))

    metrics._scored_in_batches = record  # every evaluation's sequences, nothing scored
    params = exp.params
    for aspect, splits in exp.data.trust.items():
        for split, triples in splits.items():
            current[0] = f"{aspect} {split}"
            metrics.trust_logodds(None, tokenizer, triples, max_length=params.eval.max_length)
    for name, items in exp.data.heldout.items():
        current[0] = f"held-out {name}"
        heldout.evaluate_heldout(None, tokenizer, {name: items}, params.eval)
    totals = Counter()
    print(f"{'pass':32} {'sequences':>9} {'whole':>9} {'prompt once':>11}")
    for what, encoded in passes.items():
        distinct = {(tuple(e["input_ids"]), metrics.prompt_length(e)) for e in encoded}
        prompts = Counter(ids[:n] for ids, n in distinct)
        whole = sum(len(ids) for ids, _ in distinct)
        once = whole - sum(len(p) * (count - 1) for p, count in prompts.items())
        totals.update(whole=whole, once=once)
        print(f"{what:32} {len(distinct):>9,} {whole:>9,} {once:>11,}")
    print(f"{'all':32} {'':>9} {totals['whole']:>9,} {totals['once']:>11,} "
          f"({1 - totals['once'] / totals['whole']:.0%} fewer)")


if __name__ == "__main__":
    main()
