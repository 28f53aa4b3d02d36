"""The model families this package runs, one entry each.

Everything that must tell families apart reads it: the params schema (which families a
shape or a tiny test model may name), ``plan`` (the linears of a block, the norm), the
prefix cache (which norm follows the last block) and the LM-head split. A family is a
transformers ``model_type`` whose decoder blocks take the same mask, position ids and
rotary embeddings as Llama's.

To add a family: one :class:`Family` entry here, and its config in
:func:`trustrepair.models.tiny_model`; ``tests/test_prefix.py`` checks the prefix cache
against the whole model for every entry.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    final_norm: str
    """Attribute of ``model.base_model`` that normalises the last block's output."""
    fused_qkv: bool = False
    """One ``attention.query_key_value`` linear with biases and a plain MLP (GPT-NeoX),
    rather than q/k/v/o projections and a gated MLP (Llama)."""
    qkv_bias: bool = False
    """Biases on q/k/v (Qwen2); the other projections have none."""
    layer_norm: bool = False
    """LayerNorm (weight and bias) rather than RMSNorm (weight only)."""


FAMILIES: dict[str, Family] = {
    "llama": Family(final_norm="norm"),
    "qwen2": Family(final_norm="norm", qkv_bias=True),
    "gpt_neox": Family(final_norm="final_layer_norm", fused_qkv=True, layer_norm=True),
}
"""``model_type`` -> what this package needs to know about it."""


def family(model_type: str | None) -> Family:
    """The entry of ``model_type``, or a ValueError that lists the known ones."""
    if model_type not in FAMILIES:
        raise ValueError(f"model type {model_type!r} is not one this package knows: "
                         f"{', '.join(FAMILIES)} (add it to trustrepair.families)")
    return FAMILIES[model_type]
