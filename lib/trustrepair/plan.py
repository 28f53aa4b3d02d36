"""``trustrepair plan``: what a params file will cost, before any weights are loaded.

Sizes follow from the model's shape alone (``model.tiny``, a local folder's config.json, or
``model.shape``) and the data caps; times scale one decoder block of that shape, timed on
this machine, by blocks, tokens and passes. Both are order-of-magnitude estimates, meant to
stop a run that cannot fit before it starts rather than to predict it to the minute.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from trustrepair.artifacts import GIB, format_size
from trustrepair.aspects import ASPECT_TABLE
from trustrepair.families import FAMILIES
from trustrepair.models import DTYPES, resolve_device
from trustrepair.params import ModelParams, ModelShape, Params, ParamsError

STATIC_HH = {"train": 96_000, "test": 5_000}
"""Dialogues of the paper's SFT corpus (Dahoas/static-hh), assumed where a cap is null."""
FIXTURE_HH = 118
"""Dialogues of the generated fixture data (``data.fixtures``)."""

LOGIT_COPIES = 3
"""Logits, their float32 log-softmax and its gradient, each tokens × vocab floats."""


@dataclass(frozen=True)
class Linear:
    """One ``nn.Linear`` of a decoder block."""

    name: str
    fan_in: int
    fan_out: int
    bias: bool

    @property
    def parameters(self) -> int:
        return self.fan_in * self.fan_out + (self.fan_out if self.bias else 0)

    @property
    def factor_bytes(self) -> int:
        """EK-FAC state in float32: activation covariance (in+1)² and gradient covariance
        out², their eigenvectors (same sizes), and the eigenvalue-corrected λ, out × (in+1)."""
        fan_in = self.fan_in + self.bias
        return 4 * (2 * fan_in**2 + 2 * self.fan_out**2 + self.fan_out * fan_in)


def model_shape(model: ModelParams) -> tuple[ModelShape, str]:
    """The shape of the configured model and where it came from; never loads weights."""
    if model.tiny is not None:
        t = model.tiny
        return ModelShape(family=t.family, layers=t.layers, hidden=t.hidden,
                          intermediate=t.intermediate, heads=t.heads, vocab=t.vocab), "model.tiny"
    folder = Path(model.source).expanduser()
    if (folder / "config.json").is_file():
        return shape_from_config(AutoConfig.from_pretrained(folder)), f"{folder}/config.json"
    if model.shape is not None:
        return model.shape, "model.shape"
    raise ParamsError(f"cannot tell the shape of {model.source!r} without loading it: add "
                      f"model.shape (family, layers, hidden, intermediate, heads, kv_heads, "
                      f"vocab, tie_embeddings) from the model's config.json")


def shape_from_config(config: PretrainedConfig) -> ModelShape:
    """The shape a ``save_pretrained`` folder's config.json states."""
    if config.model_type not in FAMILIES:
        raise ParamsError(f"cannot plan a {config.model_type!r} model: plan knows "
                          f"{', '.join(FAMILIES)}")
    return ModelShape(family=config.model_type, layers=config.num_hidden_layers,
                      hidden=config.hidden_size, intermediate=config.intermediate_size,
                      heads=config.num_attention_heads,
                      kv_heads=getattr(config, "num_key_value_heads", None),
                      vocab=config.vocab_size, tie_embeddings=config.tie_word_embeddings)


def hf_config(shape: ModelShape, layers: int | None = None) -> PretrainedConfig:
    """A transformers config of this shape (``layers`` overrides the depth)."""
    kwargs = dict(vocab_size=shape.vocab, hidden_size=shape.hidden,
                  intermediate_size=shape.intermediate, num_attention_heads=shape.heads,
                  num_hidden_layers=layers or shape.layers,
                  tie_word_embeddings=shape.tie_embeddings, use_cache=False)
    if not FAMILIES[shape.family].fused_qkv:
        kwargs["num_key_value_heads"] = shape.kv_heads or shape.heads
    return AutoConfig.for_model(shape.family, **kwargs)


def block_linears(shape: ModelShape) -> list[Linear]:
    """The linear modules of one decoder block, as kronfluence tracks them."""
    h, i, family = shape.hidden, shape.intermediate, FAMILIES[shape.family]
    if family.fused_qkv:
        return [Linear("attention.query_key_value", h, 3 * h, True),
                Linear("attention.dense", h, h, True),
                Linear("mlp.dense_h_to_4h", h, i, True),
                Linear("mlp.dense_4h_to_h", i, h, True)]
    kv = (shape.kv_heads or shape.heads) * (h // shape.heads)
    qkv_bias = family.qkv_bias
    return [Linear("self_attn.q_proj", h, h, qkv_bias),
            Linear("self_attn.k_proj", h, kv, qkv_bias),
            Linear("self_attn.v_proj", h, kv, qkv_bias),
            Linear("self_attn.o_proj", h, h, False),
            Linear("mlp.gate_proj", h, i, False),
            Linear("mlp.up_proj", h, i, False),
            Linear("mlp.down_proj", i, h, False)]


def saved_activations(shape: ModelShape) -> int:
    """Values a trained block keeps for backward per token, roughly 8·hidden + 4·intermediate
    (norm inputs, q/k/v, attention output, MLP branches; fused attention keeps no L×L matrix)."""
    return 8 * shape.hidden + 4 * shape.intermediate


def _norm_parameters(shape: ModelShape) -> int:
    """LayerNorm has a weight and a bias, RMSNorm a weight only."""
    return 2 * shape.hidden if FAMILIES[shape.family].layer_norm else shape.hidden


def block_parameters(shape: ModelShape) -> int:
    return sum(m.parameters for m in block_linears(shape)) + 2 * _norm_parameters(shape)


def parameter_count(shape: ModelShape) -> int:
    """Embedding + blocks + final norm + LM head (none of its own when tied)."""
    embeddings = shape.vocab * shape.hidden * (1 if shape.tie_embeddings else 2)
    return embeddings + shape.layers * block_parameters(shape) + _norm_parameters(shape)


@dataclass(frozen=True)
class DataSizes:
    """Samples each step sees; ``assumed`` says which counts are not caps from the params."""

    sft_train: int
    hh_test: int
    trust_test: dict[str, int]
    assumed: list[str]


def data_sizes(params: Params) -> DataSizes:
    """Caps from the params, else the datasets' sizes (upper bounds either way)."""
    d = params.data
    assumed = []
    hh_total = FIXTURE_HH if d.fixtures else None
    source = "the generated fixtures" if d.fixtures else "static-hh"
    train, test = d.hh.max_train, d.hh.max_test
    if train is None:
        train = (round(hh_total * (1 - d.hh.test_fraction)) if hh_total
                 else STATIC_HH["train"])
        assumed.append(f"data.hh.max_train uncapped: {train:,} train dialogues ({source})")
    if test is None:
        test = round(hh_total * d.hh.test_fraction) if hh_total else STATIC_HH["test"]
        assumed.append(f"data.hh.max_test uncapped: {test:,} test dialogues ({source})")
    trust_test = {}
    for aspect in d.trust.aspects:
        entry = ASPECT_TABLE[aspect]
        triples = entry.fixture_triples if d.fixtures else entry.triples
        split = max(1, round(triples * d.trust.test_fraction))
        trust_test[aspect] = min(split, d.trust.max_test or split)
    if d.trust.max_test is None:
        assumed.append("data.trust.max_test uncapped: " + ", ".join(
            f"{n} {a}" for a, n in trust_test.items()) + " test triples")
    train += params.planted.per_aspect * len(d.trust.aspects)
    return DataSizes(train, test, trust_test, assumed)


@dataclass(frozen=True)
class Probe:
    """One decoder block of the config's shape, random weights, timed on this machine."""

    tokens: int
    forward_s: float
    train_s: float
    """Forward + backward."""
    device: str


def probe(shape: ModelShape, batch: int, length: int, dtype: str = "float32",
          device: torch.device | str = "cpu") -> Probe:
    """Time one block's forward and forward+backward on ``batch × length`` hidden states.

    Leaves the random state as it found it: a notebook's plan must not change its results.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return _probe(shape, batch, length, dtype, device)


def _probe(shape: ModelShape, batch: int, length: int, dtype: str,
           device: torch.device) -> Probe:
    config = hf_config(shape, layers=1)
    config.vocab_size = 8  # the block is timed, not the embedding
    with device:
        block = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype]).base_model
        hidden = torch.randn(batch, length, shape.hidden, dtype=DTYPES[dtype])

    def train_pass(states: torch.Tensor) -> None:
        block(inputs_embeds=states).last_hidden_state.float().square().mean().backward()

    def forward_pass() -> None:
        with torch.no_grad():
            block(inputs_embeds=hidden)

    forward_pass()  # warm-up: kernels, allocator
    train_pass(hidden[:1, :16])
    return Probe(tokens=batch * length, forward_s=_timed(forward_pass, device),
                 train_s=_timed(lambda: train_pass(hidden), device), device=str(device))


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


@dataclass(frozen=True)
class Step:
    """Peak memory of one step by component, and its time if a probe ran."""

    name: str
    memory: dict[str, int]
    """Component -> bytes, all on the compute device."""
    host_memory: dict[str, int]
    """Component -> bytes kept in host RAM even on a GPU run."""
    seconds: float | None
    work: str
    """The passes the time scales to."""

    def peak(self, on_gpu: bool) -> int:
        return sum(self.memory.values()) + (0 if on_gpu else sum(self.host_memory.values()))


@dataclass(frozen=True)
class Plan:
    """Everything ``format_plan`` prints; ``device`` is where the run would compute."""

    params: Params
    shape: ModelShape
    shape_from: str
    parameters: int
    trained_blocks: int
    trainable: int
    tracked_blocks: int
    data: DataSizes
    steps: list[Step]
    probe: Probe | None
    device: str


def make_plan(params: Params, probe_result: Probe | None = None) -> Plan:
    """Sizes and (with a probe) times of SFT, attribution and one evaluation."""
    shape, shape_from = model_shape(params.model)
    sft, ev, attr = params.sft, params.eval, params.attribution
    trained = shape.layers if sft.train_blocks == "all" else sft.train_blocks
    for field, blocks in (("sft.train_blocks", trained),
                          ("attribution.tracked_blocks", attr.tracked_blocks)):
        if blocks > shape.layers:
            raise ParamsError(f"{field}={blocks} but the model has {shape.layers} decoder "
                              f"blocks: lower it")
    total = parameter_count(shape)
    per_block = block_parameters(shape)
    trainable = total if sft.train_blocks == "all" else trained * per_block
    data = data_sizes(params)
    weight_bytes = DTYPES[params.model.dtype].itemsize
    activations = saved_activations(shape)

    def pass_seconds(tokens: int, grad_blocks: int) -> float | None:
        """Frozen blocks forward, ``grad_blocks`` (and the head, when any) forward+backward;
        the LM head counts as vocab × hidden / block parameters blocks."""
        if probe_result is None:
            return None
        forward, train = (s / probe_result.tokens
                          for s in (probe_result.forward_s, probe_result.train_s))
        head = shape.vocab * shape.hidden / per_block * (train if grad_blocks else forward)
        return tokens * ((shape.layers - grad_blocks) * forward + grad_blocks * train + head)

    sft_tokens = sft.batch_size * sft.max_length
    steps_per_run = math.ceil(sft.epochs * data.sft_train / sft.batch_size)
    sft_step = Step(
        "sft",
        {"frozen weights": (total - trainable) * weight_bytes,
         "trainable weights + grads + AdamW moments (fp32)": 16 * trainable,
         "activations of trained blocks": sft_tokens * activations * trained * weight_bytes,
         "logits + loss (fp32)": LOGIT_COPIES * sft_tokens * shape.vocab * 4},
        {}, pass_seconds(steps_per_run * sft_tokens, trained),
        f"{steps_per_run:,} steps of {sft.batch_size}×{sft.max_length} tokens, "
        f"{trained} blocks trained")

    tracked = block_linears(shape) * attr.tracked_blocks
    tracked_params = sum(m.parameters for m in tracked)
    fit_samples = min(attr.factor_samples, data.sft_train)
    n_aspects = len(params.data.trust.aspects)
    attr_tokens = attr.train_batch_size * sft.max_length
    attr_passes = 2 * fit_samples + n_aspects * data.sft_train
    attr_step = Step(
        "attribution",
        {"weights": total * weight_bytes,
         "EK-FAC factors (fp32)": sum(m.factor_bytes for m in tracked),
         "per-sample + query gradients of tracked modules": (attr.train_batch_size + 1)
         * tracked_params * 4,
         "activations of tracked blocks": attr_tokens * activations * attr.tracked_blocks
         * weight_bytes,
         "logits + loss (fp32)": LOGIT_COPIES * attr_tokens * shape.vocab * 4},
        {"prefix-activation cache of the SFT set": data.sft_train * sft.max_length
         * shape.hidden * weight_bytes} if params.prefix_cache == "all" else {},
        pass_seconds(attr_passes * sft.max_length, attr.tracked_blocks),
        f"factors: 2 passes over {fit_samples:,} samples; scores: {n_aspects} aspects × "
        f"{data.sft_train:,} samples; {sft.max_length} tokens each")

    eval_sequences = 2 * sum(data.trust_test.values()) + data.hh_test
    eval_step = Step(
        "evaluation",
        {"weights": total * weight_bytes,
         "logits (fp32)": 2 * ev.batch_size * ev.max_length * shape.vocab * 4},
        {"prefix-activation cache": eval_sequences * ev.max_length * shape.hidden
         * weight_bytes} if params.prefix_cache != "off" else {},
        pass_seconds(eval_sequences * ev.max_length, 0),
        f"one model: {eval_sequences:,} sequences × {ev.max_length} tokens, forward only")
    return Plan(params=params, shape=shape, shape_from=shape_from, parameters=total,
                trained_blocks=trained, trainable=trainable, tracked_blocks=attr.tracked_blocks,
                data=data, steps=[sft_step, attr_step, eval_step], probe=probe_result,
                device=str(resolve_device(params.device)))


def probe_for(params: Params) -> Probe:
    """The probe at SFT's batch shape, on the params' device and thread count."""
    threads = os.environ.get("TRUSTREPAIR_THREADS") or params.threads
    if threads:
        torch.set_num_threads(int(threads))
    shape, _ = model_shape(params.model)
    return probe(shape, params.sft.batch_size, params.sft.max_length, params.model.dtype,
                 resolve_device(params.device))


def memory_available(device: str) -> tuple[int, str]:
    """Bytes a run can use: free CUDA memory, else MemAvailable of /proc/meminfo."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free, f"free on {torch.cuda.get_device_name(torch.device(device))}"
    meminfo = Path("/proc/meminfo")
    lines = meminfo.read_text().splitlines() if meminfo.exists() else []
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    raise RuntimeError("cannot read MemAvailable from /proc/meminfo: pass --memory-gib")


class PlanRefused(RuntimeError):
    """The estimated peak memory exceeds what the machine has."""


def check_fits(plan: Plan, available: int, seen_as: str,
               steps: Collection[str] | None = None) -> None:
    """Refuse a run whose biggest step (of ``steps``, default all) would not fit, with the
    numbers."""
    on_gpu = plan.device.startswith("cuda")
    checked = [s for s in plan.steps if steps is None or s.name in steps]
    if not checked:
        return
    biggest = max(checked, key=lambda s: s.peak(on_gpu))
    if biggest.peak(on_gpu) <= available:
        return
    part, size = max({**biggest.memory, **({} if on_gpu else biggest.host_memory)}.items(),
                     key=lambda kv: kv[1])
    raise PlanRefused(
        f"step {biggest.name} needs ~{biggest.peak(on_gpu) / GIB:.1f} GiB at its peak, more "
        f"than the {available / GIB:.1f} GiB available ({seen_as}); its largest part is "
        f"{part} ({size / GIB:.1f} GiB). Lower sft.train_blocks, the batch sizes or "
        f"max_length, or plan for a bigger machine with --memory-gib")


def _duration(seconds: float) -> str:
    for unit, length in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.1f} {unit}"
    return f"{seconds:.1f} s"


def format_plan(plan: Plan, available: tuple[int, str] | None = None) -> str:
    """The plan as the command prints it."""
    s, p = plan.shape, plan.params
    kv = f" ({s.kv_heads} kv)" if s.kv_heads and s.kv_heads != s.heads else ""
    tied = ", tied embeddings" if s.tie_embeddings else ""
    lines = [
        f"plan for {p.name}: estimates from the shape and data caps; no weights loaded",
        f"model      {s.family} (from {plan.shape_from}): {s.layers} layers, hidden {s.hidden}, "
        f"intermediate {s.intermediate}, {s.heads} heads{kv}, vocab {s.vocab:,}{tied}",
        f"           {plan.parameters:,} parameters ({block_parameters(s):,} per block)",
        f"sft        trains the last {plan.trained_blocks} of {s.layers} blocks "
        f"({plan.trainable:,} parameters)",
        f"tracked    the last {plan.tracked_blocks} block(s); per block (in × out):",
    ]
    for m in block_linears(s):
        lines.append(f"           {m.name:<26} {m.fan_in:>6} × {m.fan_out:<6}"
                     f"{' +bias' if m.bias else '      '}  EK-FAC {format_size(m.factor_bytes)}")
    factors = plan.tracked_blocks * sum(m.factor_bytes for m in block_linears(s))
    lines.append(f"           EK-FAC factors over {plan.tracked_blocks} block(s): "
                 f"{format_size(factors)} (float32)")
    lines.append(f"data       {plan.data.sft_train:,} SFT train, {plan.data.hh_test:,} HH test "
                 f"dialogues, trust test triples "
                 + ", ".join(f"{a} {n}" for a, n in plan.data.trust_test.items()))
    lines += [f"           {note}" for note in plan.data.assumed]
    on_gpu = plan.device.startswith("cuda")
    lines.append(f"memory     estimated peak per step on {plan.device}:")
    for step in plan.steps:
        lines.append(f"  {step.name:<12} {format_size(step.peak(on_gpu)):>10}")
        lines += [f"               {format_size(size):>10}  {part}"
                  for part, size in step.memory.items() if size]
        for part, size in step.host_memory.items():
            lines.append(f"               {format_size(size):>10}  {part} (host RAM)")
    if available is not None:
        lines.append(f"           available: {available[0] / GIB:.1f} GiB ({available[1]})")
    cached = sum(size for step in plan.steps for size in step.host_memory.values())
    if cached and p.prefix_cache_on_disk:
        lines.append(f"disk       up to {format_size(cached)} of prefix-activation states, kept "
                     f"between runs in {p.cache_dir() / 'prefix'}")
    if plan.probe is None:
        lines.append("time       not estimated (--no-probe)")
        return "\n".join(lines)
    pr = plan.probe
    lines.append(f"time       ORDER OF MAGNITUDE ONLY: one block on {pr.tokens:,} tokens took "
                 f"{pr.forward_s:.3f} s forward, {pr.train_s:.3f} s forward+backward on "
                 f"{pr.device} ({torch.get_num_threads()} threads), scaled linearly by tokens, "
                 f"blocks and passes, every sequence at full max_length (an upper bound)")
    for step in plan.steps:
        lines.append(f"  {step.name:<12} ~{_duration(step.seconds):>9}  {step.work}")
    lines.append("           the pipeline evaluates many models; most reuse the prefix cache "
                 "and rerun only the tracked blocks")
    return "\n".join(lines)

