"""Which SFT samples hurt each trust aspect: EK-FAC influence with kronfluence (paper §3.3).

The kronfluence ``Task`` says what is differentiated: the SFT response loss of a training
sample, and the trust log-odds F_j (eq. 3) of an aspect's *train* triples as the
measurement. Pairwise scores are ``∇F_jᵀ (G + λI)⁻¹ ∇L(z)`` with query gradients summed
over the aspect's triples, one score per SFT sample.

Sign convention (stated once, used everywhere): up-weighting a sample z with a *negative*
score raises F_j, i.e. makes the model less trustworthy. ``detrimental = -score``, so a
higher detrimental score means a more harmful sample, and gradient *ascent* on such
samples is predicted to lower F_j.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments
from kronfluence.task import Task
from kronfluence.utils.dataset import DataLoaderKwargs
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustrepair.artifacts import atomic_path, read_json, write_json, write_text
from trustrepair.dpp import normalised_scores
from trustrepair.experiment import Experiment
from trustrepair.features import mean_pooled_hidden_states
from trustrepair.metrics import (
    collate,
    encode,
    encode_dialogues,
    prompt_length,
    response_logits,
    response_logprobs,
    response_loss,
)
from trustrepair.models import DTYPES, is_saved_model, tracked_linear_modules
from trustrepair.params import AttributionParams
from trustrepair.prefix import PrefixCache, filling, through
from trustrepair.profiling import phase
from trustrepair.steps import ATTRIBUTION, SFT, TIMINGS


class SFTTrustTask(Task):
    """SFT loss for training samples; summed signed log-probs of triples as F_j.

    Query items are single response sequences carrying ``sign``, how many more times they
    are an opponent than a proponent (:func:`encode_triples`), so the measurement summed
    over an aspect's triples is ``Σ [log P(o|m) - log P(p|m)]`` = n_triples · F_j.
    """

    def __init__(self, tracked_modules: list[str], normalized: bool = True,
                 cache: PrefixCache | None = None, loss_reduction: str = "sum"):
        self.tracked_modules = tracked_modules
        self.normalized = normalized
        self.cache = cache
        self.loss_reduction = loss_reduction
        self._wrapped: nn.Module | None = None

    def _lm(self, model: nn.Module) -> nn.Module:
        """``model`` reading the states below the tracked blocks from the cache, if any.

        Wrapped once per model: the wrap hashes the lower blocks to check the cache fits.
        """
        if self.cache is None:
            return model
        if self._wrapped is None or self._wrapped.model is not model:
            self._wrapped = self.cache.wrap(model)
        return self._wrapped

    def compute_train_loss(self, batch: dict, model: torch.nn.Module,
                           sample: bool = False) -> torch.Tensor:
        logits, labels, mask = response_logits(self._lm(model), batch)
        logits = logits.float()
        if sample:  # labels drawn from the model: the true Fisher, as in the paper
            with torch.no_grad():
                labels = torch.multinomial(torch.softmax(logits, -1), num_samples=1).squeeze(-1)
        return response_loss(logits, labels, mask, self.loss_reduction)

    def compute_measurement(self, batch: dict, model: torch.nn.Module) -> torch.Tensor:
        logprobs, _ = response_logprobs(self._lm(model), batch, normalized=self.normalized)
        return (batch["sign"] * logprobs).sum()

    def get_influence_tracked_modules(self) -> list[str]:
        return self.tracked_modules

    def get_attention_mask(self, batch: dict) -> torch.Tensor:
        return batch["attention_mask"]


class EncodedDataset(torch.utils.data.Dataset):
    """Pre-tokenised items (``input_ids``, ``labels``, optional ``sign``) for DataLoaders."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate_signed(items: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    batch = collate(items, pad_token_id)
    if "sign" in items[0]:
        batch["sign"] = torch.tensor([it["sign"] for it in items], dtype=torch.float32)
    return batch


def encode_triples(tokenizer: PreTrainedTokenizerBase, triples: Dataset,
                   max_length: int) -> EncodedDataset:
    """The triples' summed log-odds Σ [log P(o|m) - log P(p|m)] as signed sequences, each
    distinct sequence once with its net sign: a stereotype that is the opponent of three
    triples counts +3 (its gradient is computed once, not three times), and a sequence that
    is as often a proponent as an opponent cancels and is left out."""
    items: dict[tuple[int, ...], dict] = {}
    for row in triples:
        for response, sign in ((row["opponent"], 1.0), (row["proponent"], -1.0)):
            encoded = encode(tokenizer, row["prompt"], response, max_length)
            key = (*encoded["input_ids"], -1, *encoded["labels"])
            items.setdefault(key, {**encoded, "sign": 0.0})["sign"] += sign
    return EncodedDataset([item for item in items.values() if item["sign"] != 0])


def _by_length(items: list[dict]) -> EncodedDataset:
    """Items ordered by length, so that batches carry little padding."""
    return EncodedDataset(sorted(items, key=lambda item: len(item["input_ids"])))


@dataclass
class Influence:
    """What step 02 hands on: per-aspect scores over the SFT train set and where factors live."""

    scores: dict[str, torch.Tensor]
    """Aspect -> (n_train,) kronfluence scores (negative = detrimental)."""
    factors_dir: Path
    """kronfluence's factor folder, with :data:`FACTOR_METADATA` beside the factors."""
    tracked_modules: list[str]


FACTOR_METADATA = "trustrepair_factors.json"
"""Beside kronfluence's factor files: which model and modules they were fitted on."""
PHASES_DONE = "trustrepair_phases.json"
"""Beside kronfluence's files: the phases that finished writing them, in order."""


def run_phases(folder: Path, phases: list[tuple[str, Callable[[], object]]], *,
               overwrite: bool) -> bool:
    """Run each kronfluence phase (covariance, eigendecomposition, lambda; or an aspect's
    scores) that :data:`PHASES_DONE` in ``folder`` does not record as finished, and every
    phase after it, recording each as it ends; returns whether any ran.

    kronfluence takes a phase as done when its files exist, so one cut off midway was
    read back as it was left (a lambda fitted on a partial state, a truncated scores
    file). A phase that did not finish is recomputed over what it left. The record keeps
    the torch RNG state each phase ended with (the true Fisher samples labels), and a
    resumed fit starts from it: it ends with the bytes of an uninterrupted one, which
    draws exactly as before.
    """
    record = folder / PHASES_DONE
    done = read_json(record) if record.exists() and not overwrite else []
    names = [name for name, _ in phases]
    finished = 0
    while (finished < min(len(names), len(done))
           and done[finished].get("phase") == names[finished]):
        finished += 1
    if finished:
        state = base64.b64decode(done[finished - 1]["rng"])
        torch.set_rng_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    for place, (name, compute) in enumerate(phases[finished:], start=finished):
        compute()
        done = [*done[:place], {"phase": name, "rng": base64.b64encode(
            torch.get_rng_state().numpy().tobytes()).decode()}]
        write_json(record, done)
    return finished < len(phases)


def tracked_weights_hash(model: torch.nn.Module, modules: list[str]) -> str:
    """Fingerprint of the tracked layers' parameters: ties factors to one model."""
    named = dict(model.named_modules())
    digest = hashlib.sha256()
    for name in modules:
        for p in (named[name].weight, named[name].bias):
            if p is not None:
                digest.update(p.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def detrimental(scores: torch.Tensor) -> torch.Tensor:
    """Higher = more harmful to the aspect (the negated kronfluence score)."""
    return -scores


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Stop with the module name when a factor or score is NaN or inf."""
    for name, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise FloatingPointError(
                f"{what} for {name} contain NaN or inf: rerun with attribution.dtype: float32 "
                f"and/or a larger attribution.damping (e.g. 1e-3)")


def fit_and_score(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, train: Dataset,
                  trust_train: dict[str, Dataset], params: AttributionParams, *,
                  out_dir: Path, name: str, sft_max_length: int, eval_max_length: int,
                  normalized: bool, seed: int = 0, overwrite: bool = False,
                  cache: PrefixCache | None = None) -> Influence:
    """Fit EK-FAC factors on a sample of SFT data, then score every SFT sample per aspect.

    Results live under ``out_dir`` (kronfluence's layout); rerunning with the same ``name``
    reuses what was already computed, so an interrupted step resumes, unless ``overwrite``.
    With a ``cache`` of ``model`` below the tracked blocks, every pass runs only those.
    """
    tracked = tracked_linear_modules(model, params.tracked_blocks)
    if cache is not None:
        cache.check_below(model, tracked)
    model_hash = tracked_weights_hash(model, tracked)
    task = SFTTrustTask(tracked, normalized=normalized, cache=cache,
                        loss_reduction=params.loss_reduction)
    model = prepare_model(model, task)
    analyzer = Analyzer(analysis_name=name, model=model, task=task, output_dir=str(out_dir),
                        cpu=not torch.cuda.is_available(), disable_tqdm=False)
    analyzer.set_dataloader_kwargs(DataLoaderKwargs(
        collate_fn=partial(collate_signed, pad_token_id=tokenizer.pad_token_id)))
    train_items = encode_dialogues(tokenizer, train, sft_max_length)
    n_fit = min(params.factor_samples, len(train_items))
    fit_idx = torch.randperm(len(train_items), generator=torch.Generator().manual_seed(seed))
    fit_items = _by_length([train_items[int(i)] for i in fit_idx[:n_fit]])
    # Scored in length order (less padding); scores are put back in dataset order below.
    by_length = sorted(range(len(train_items)), key=lambda i: len(train_items[i]["input_ids"]))
    sorted_train = EncodedDataset([train_items[i] for i in by_length])
    factor_args = FactorArguments(
        strategy=params.strategy, use_empirical_fisher=not params.true_fisher,
        amp_dtype=DTYPES[params.dtype] if params.dtype != "float32" else None,
        has_shared_parameters=False)
    # Fitting reads half the SFT set, scoring all of it: its states go to one shard.
    with filling(cache, [item["input_ids"] for item in train_items], "SFT train set"):
        start = time.perf_counter()
        factors_dir = Path(analyzer.factors_output_dir(factors_name="ekfac"))
        with phase(f"{params.strategy} factor fit"):
            fitted = run_phases(factors_dir, [
                ("covariance", lambda: analyzer.fit_covariance_matrices(
                    factors_name="ekfac", dataset=fit_items, factor_args=factor_args,
                    per_device_batch_size=params.train_batch_size, overwrite_output_dir=True)),
                ("eigendecomposition", lambda: analyzer.perform_eigendecomposition(
                    factors_name="ekfac", factor_args=factor_args, overwrite_output_dir=True)),
                ("lambda", lambda: analyzer.fit_lambda_matrices(
                    factors_name="ekfac", dataset=fit_items, factor_args=factor_args,
                    per_device_batch_size=params.train_batch_size, overwrite_output_dir=True)),
            ], overwrite=overwrite)
        # A resumed step reuses saved factors: keep the time of the fit that made them.
        if fitted or not (factors_dir / TIMINGS).exists():
            write_json(factors_dir / TIMINGS, {"fit_seconds": time.perf_counter() - start})
        (factors_dir / FACTOR_METADATA).write_text(json.dumps(
            {"modules": tracked, "strategy": params.strategy, "model_hash": model_hash}, indent=2))
        factors = analyzer.load_all_factors("ekfac")
        for kind, per_module in factors.items():
            check_finite(per_module, f"EK-FAC {kind}")
        score_args = ScoreArguments(
            damping_factor=params.damping, aggregate_query_gradients=True,
            amp_dtype=DTYPES[params.dtype] if params.dtype != "float32" else None)
        scores = {}
        for aspect, triples in tqdm(trust_train.items(), desc="aspects"):
            queries = _by_length(encode_triples(tokenizer, triples, eval_max_length).items)
            with filling(cache, [q["input_ids"] for q in queries.items], f"{aspect} queries",
                         [prompt_length(q) for q in queries.items], params.query_batch_size,
                         model=model), phase(f"{params.strategy} scores"):
                run_phases(Path(analyzer.scores_output_dir(f"scores_{aspect}")), [
                    ("pairwise scores", partial(
                        analyzer.compute_pairwise_scores, scores_name=f"scores_{aspect}",
                        factors_name="ekfac", query_dataset=queries, train_dataset=sorted_train,
                        per_device_query_batch_size=params.query_batch_size,
                        per_device_train_batch_size=params.train_batch_size,
                        score_args=score_args, overwrite_output_dir=True)),
                ], overwrite=overwrite or fitted)
            result = analyzer.load_pairwise_scores(f"scores_{aspect}")
            check_finite(result, f"{aspect} scores")
            # Summed measurement over n triples -> divide by n: the score of the mean F_j.
            in_order = torch.empty(len(train_items), dtype=torch.float64)
            in_order[by_length] = result["all_modules"].sum(0).double()
            scores[aspect] = in_order / (len(triples) or math.nan)
    return Influence(scores=scores, factors_dir=factors_dir, tracked_modules=tracked)


COMMON = "common"
"""Key of the score summed over aspects: one subset for all aspects (paper Table 2)."""


def common_scores(scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over aspects of each aspect's detrimental scores min-max normalised to [0, 1] (the
    γ̂ of eq. 7 summed over aspects, app. E.4): an aspect whose raw scores run on a larger
    scale would otherwise choose the common subset alone."""
    normalised = [torch.from_numpy(normalised_scores(s)) for s in scores.values()]
    return torch.stack(normalised).sum(0).float()


def post_sft_dir(exp: Experiment) -> Path:
    """The post-SFT model of step 01; a clear error if it has not been run."""
    path = exp.output(SFT, "model")
    if not is_saved_model(path):
        raise FileNotFoundError(f"no post-SFT model at {path}: run step 01 first "
                                f"(trustrepair run PARAMS --only 01)")
    return path


def run_attribution(exp: Experiment) -> dict[str, Path]:
    """Step 02: detrimental scores per aspect (+ common) and DPP features, saved to disk.

    Writes the step's ``scores`` (aspect -> detrimental score per SFT train sample, in the
    order of ``exp.data.hh["train"]``), ``features`` and one ``ranked`` CSV per target.
    """
    paths = {name: exp.output(ATTRIBUTION, name) for name in ("scores", "features", "summary")}

    def compute() -> dict:
        p = exp.params
        model, tokenizer = exp.models.load(post_sft_dir(exp))
        train = exp.data.hh["train"]
        cache = exp.models.prefix_cache(model, attribution=True)
        sequences = [e["input_ids"] for e in encode_dialogues(tokenizer, train, p.sft.max_length)]
        # The features pass fills the cache's lower-block states that the fit then reads.
        with phase("hidden-state features"), filling(cache, sequences, "SFT train set"):
            features = mean_pooled_hidden_states(through(cache, model), tokenizer, train,
                                                 max_length=p.sft.max_length,
                                                 batch_size=p.eval.batch_size)
        influence = fit_and_score(
            model, tokenizer, train, {a: s["train"] for a, s in exp.data.trust.items()},
            p.attribution, out_dir=exp.output(ATTRIBUTION, "kronfluence"),
            name=exp.fingerprint(ATTRIBUTION),
            sft_max_length=p.sft.max_length, eval_max_length=p.eval.max_length,
            normalized=p.eval.length_normalized, seed=p.seed, overwrite=exp.recompute,
            cache=cache)
        scores = {a: detrimental(s).float() for a, s in influence.scores.items()}
        scores[COMMON] = common_scores(scores)
        with atomic_path(paths["scores"]) as tmp:
            save_file({k: v.contiguous() for k, v in scores.items()}, str(tmp))
        with atomic_path(paths["features"]) as tmp:
            save_file({"features": features.contiguous()}, str(tmp))
        for aspect, values in scores.items():
            frame = ranked_frame(train, values)
            write_text(exp.output(ATTRIBUTION, "ranked", target=aspect),
                       frame.to_csv(index=False))
        return {"tracked_modules": influence.tracked_modules, "n_train": len(train),
                "factors_dir": str(influence.factors_dir),
                "factor_samples": min(p.attribution.factor_samples, len(train)),
                "aspects": list(influence.scores)}

    exp.cached(ATTRIBUTION, paths["summary"], compute)
    return paths


def ranked_frame(train: Dataset, detrimental_scores: torch.Tensor) -> pd.DataFrame:
    """SFT samples ranked from most to least detrimental, with their text."""
    frame = pd.DataFrame({"id": train["id"], "score": detrimental_scores.double().numpy(),
                          "prompt": train["prompt"], "response": train["response"]})
    frame = frame.sort_values("score", ascending=False, kind="stable")
    frame.insert(2, "rank", range(1, len(frame) + 1))
    return frame


def load_scores(exp: Experiment) -> dict[str, torch.Tensor]:
    """Detrimental scores saved by step 02 (aspect or ``common`` -> (n_train,))."""
    return load_file(str(ATTRIBUTION.require(exp.run_dir, "scores")))


def load_features(exp: Experiment) -> torch.Tensor:
    return load_file(str(ATTRIBUTION.require(exp.run_dir, "features")))["features"]


def top_detrimental(exp: Experiment, target: str, n: int = 5) -> pd.DataFrame:
    """The ``n`` most detrimental SFT samples for a target, with their text (cf. appendix F)."""
    frame = pd.read_csv(ATTRIBUTION.require(exp.run_dir, "ranked", target=target))
    return frame.head(n)[["rank", "id", "score", "prompt", "response"]]
