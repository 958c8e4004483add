"""The LLM catalog: architecture figures of the models suanli plans for, each entry with its public source.

Parameter counts and KV-cache bytes are *recomputed* from the architecture (:func:`computed_params`,
:func:`computed_kv_bytes_per_token`) so that the planner (``suanli.perf``) works from the architecture itself; the
stored totals are the cross-check (the tests require agreement within 1%).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from suanli.errors import UnknownName


class MoE(BaseModel):
    """Mixture-of-experts fields (``None`` on the architecture of a dense model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    routed_experts: int = Field(gt=0)
    shared_experts: int = Field(ge=0)
    experts_per_token: int = Field(gt=0)
    moe_intermediate: int = Field(gt=0)
    dense_layers: int = Field(ge=0, description="leading dense (non-MoE) layers, e.g. DeepSeek first_k_dense_replace")
    moe_layer_step: int = Field(
        1, ge=1, description="of the layers after the leading dense ones, every k-th is MoE and the others dense "
        "(Llama 4 interleave_moe_layer_step: MoE layers k-1, 2k-1, ...)")


class Vision(BaseModel):
    """The vision encoder of a multimodal model (a ViT whose merged patches become prompt tokens)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    layers: int = Field(gt=0, description="vision_config.depth")
    hidden: int = Field(gt=0)
    intermediate: int = Field(gt=0)
    heads: int = Field(gt=0)
    patch_size: int = Field(gt=0)
    spatial_merge: int = Field(gt=0, description="spatial_merge_size: merge x merge patches become one LLM token")
    out_hidden: int = Field(gt=0, description="width of the LLM the merged tokens are projected into")
    mlp: Literal["swiglu", "gelu"] = Field("swiglu", description="swiglu: 3 matrices per block, gelu: 2")
    bias: bool = True
    extra_mergers: int = Field(0, ge=0, description="additional patch mergers (Qwen3-VL DeepStack feature taps)")


def vision_params(v: Vision) -> int:
    """Weights of the vision encoder: blocks (QKV + output projection, MLP, two norms), patch embedding and the
    patch merger(s) (norm + two linear layers from merge^2 x hidden to out_hidden)."""
    h, i = v.hidden, v.intermediate
    attn = 4 * h * h + (4 * h if v.bias else 0)
    mats = 3 if v.mlp == "swiglu" else 2
    mlp = mats * h * i + ((mats - 1) * i + h if v.bias else 0)
    blocks = v.layers * (attn + mlp + 2 * h)
    patch = 3 * 2 * v.patch_size * v.patch_size * h  # 3 channels x temporal patch 2 x patch^2 -> hidden
    m = h * v.spatial_merge * v.spatial_merge
    merger = h + m * m + m * v.out_hidden + (m + v.out_hidden if v.bias else 0)
    return blocks + patch + merger * (1 + v.extra_mergers)


class Architecture(BaseModel):
    """The decoder architecture as the model config states it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    intermediate: int = Field(gt=0, description="dense FFN intermediate size")
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0, description="query/key head dim (MLA: nope + rope)")
    vocab: int = Field(gt=0)
    max_positions: int = Field(gt=0)
    tied_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    attention: Literal["gqa", "mla"] = "gqa"
    q_lora_rank: int | None = None
    kv_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    moe: MoE | None = None
    vision: Vision | None = None

    @model_validator(mode="after")
    def _mla_fields(self) -> Architecture:
        if self.attention == "mla":
            need = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
            missing = [n for n in need if getattr(self, n) is None]
            if missing:
                raise ValueError(f"MLA attention needs {', '.join(missing)}")
            if self.qk_nope_head_dim + self.qk_rope_head_dim != self.head_dim:  # type: ignore[operator]
                raise ValueError("head_dim must equal qk_nope_head_dim + qk_rope_head_dim for MLA")
        return self

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def moe_layers(self) -> int:
        if self.moe is None:
            return 0
        return (self.layers - self.moe.dense_layers) // self.moe.moe_layer_step

    @property
    def dense_layers(self) -> int:
        return self.layers - self.moe_layers

    @property
    def v_dim(self) -> int:
        """Value head dim (equals head_dim except for MLA)."""
        return self.v_head_dim if self.v_head_dim is not None else self.head_dim


class LLM(BaseModel):
    """One model of the catalog."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str
    name: str
    family: str
    aliases: tuple[str, ...] = ()
    architecture: Architecture
    total_params_b: float = Field(gt=0)
    active_params_b: float = Field(gt=0)
    published: str | None = None
    kv_bytes_per_token_bf16: int = Field(gt=0)
    vision_params_b: float | None = Field(None, gt=0, description="vision encoder weights (multimodal models)")
    source: str
    notes: str | None = None

    @property
    def arch(self) -> Architecture:
        return self.architecture

    @property
    def is_moe(self) -> bool:
        return self.architecture.is_moe


class ParamBreakdown(BaseModel):
    """Parameter counts computed from an architecture (plain counts, not billions)."""

    model_config = ConfigDict(frozen=True)
    embedding: int
    lm_head: int
    attention: int  # all layers
    dense_mlp: int  # all dense layers
    routed_experts: int  # all MoE layers, all routed experts
    routed_experts_active: int  # all MoE layers, experts_per_token experts
    shared_experts: int
    router: int
    norms: int
    vision: int = 0  # vision encoder of a multimodal model (not part of `total`/`active`: the language model)

    @property
    def total(self) -> int:
        """The language model's weights (the vision encoder is counted apart, in ``vision``)."""
        return (self.embedding + self.lm_head + self.attention + self.dense_mlp + self.routed_experts
                + self.shared_experts + self.router + self.norms)

    @property
    def active(self) -> int:
        return (self.embedding + self.lm_head + self.attention + self.dense_mlp + self.routed_experts_active
                + self.shared_experts + self.router + self.norms)


def attention_params_per_layer(a: Architecture) -> int:
    """Weights of one attention block (projections, biases, q/k norms, MLA low-rank norms)."""
    h = a.hidden
    if a.attention == "mla":
        assert a.q_lora_rank and a.kv_lora_rank and a.qk_rope_head_dim is not None and a.qk_nope_head_dim
        q = h * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * a.heads * a.head_dim
        kv = (h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank
              + a.kv_lora_rank * a.heads * (a.qk_nope_head_dim + a.v_dim))
        o = a.heads * a.v_dim * h
        return q + kv + o
    q_dim = a.heads * a.head_dim
    kv_dim = a.kv_heads * a.head_dim
    n = h * q_dim + 2 * h * kv_dim + q_dim * h
    if a.qkv_bias:
        n += q_dim + 2 * kv_dim
    if a.qk_norm:
        n += 2 * a.head_dim
    return n


def computed_params(a: Architecture) -> ParamBreakdown:
    """Parameter counts from the architecture fields (SwiGLU FFNs: 3 matrices per expert / dense FFN)."""
    h = a.hidden
    emb = a.vocab * h
    head = 0 if a.tied_embeddings else a.vocab * h
    attn = a.layers * attention_params_per_layer(a)
    norms = a.layers * 2 * h + h
    dense = a.dense_layers * 3 * h * a.intermediate
    routed = routed_active = shared = router = 0
    if a.moe is not None:
        m = a.moe
        per_expert = 3 * h * m.moe_intermediate
        routed = a.moe_layers * m.routed_experts * per_expert
        routed_active = a.moe_layers * m.experts_per_token * per_expert
        shared = a.moe_layers * m.shared_experts * per_expert
        router = a.moe_layers * h * m.routed_experts
    vis = vision_params(a.vision) if a.vision is not None else 0
    return ParamBreakdown(embedding=emb, lm_head=head, attention=attn, dense_mlp=dense, routed_experts=routed,
                          routed_experts_active=routed_active, shared_experts=shared, router=router, norms=norms,
                          vision=vis)


def computed_kv_bytes_per_token(a: Architecture, bytes_per_value: float = 2.0) -> float:
    """KV-cache bytes one token occupies over all layers (MLA caches the compressed latent + rope key)."""
    if a.attention == "mla":
        assert a.kv_lora_rank is not None and a.qk_rope_head_dim is not None
        per_layer = a.kv_lora_rank + a.qk_rope_head_dim
    else:
        per_layer = 2 * a.kv_heads * a.head_dim
    return a.layers * per_layer * bytes_per_value


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _compact(name: str) -> str:
    """Looser form: lower case, without separators (``llama2-70b`` == ``Llama-2-70B`` == ``llama 2 70b``)."""
    return re.sub(r"[^a-z0-9.]", "", name.strip().lower())


@cache
def _load() -> tuple[dict[str, LLM], dict[str, str], dict[str, str]]:
    text = resources.files("suanli.catalog").joinpath("data/llms.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    by_key: dict[str, LLM] = {}
    alias: dict[str, str] = {}
    compact: dict[str, str] = {}
    for entry in raw["llms"]:
        m = LLM.model_validate(entry)
        if m.key in by_key:
            raise ValueError(f"duplicate LLM key {m.key}")
        by_key[m.key] = m
        for a in (m.key, *m.aliases):
            for table, form in ((alias, _norm(a)), (compact, _compact(a))):
                if form in table and table[form] != m.key:
                    raise ValueError(f"LLM alias {a!r} names both {table[form]} and {m.key}")
                table[form] = m.key
    return by_key, alias, compact


def llms() -> list[LLM]:
    """Every model of the catalog, in catalog order."""
    return list(_load()[0].values())


def resolve_llm(name: str) -> str:
    """The catalog key for ``name`` (key or alias, any case, ``-``/``_``/space insensitive); raises UnknownName."""
    by_key, alias, compact = _load()
    if name in by_key:
        return name
    key = alias.get(_norm(name)) or compact.get(_compact(name))
    if key is None:
        raise UnknownName(f"unknown model {name!r}; known: {', '.join(by_key)}")
    return key


def llm(name: str) -> LLM:
    """The catalog entry for ``name`` (key or alias)."""
    return _load()[0][resolve_llm(name)]


def is_known_llm(name: str) -> bool:
    try:
        resolve_llm(name)
    except UnknownName:
        return False
    return True
