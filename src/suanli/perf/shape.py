"""What the performance model needs to know about an LLM, derived from its catalog architecture.

FLOP counts are multiply-adds x 2. ``linear`` FLOPs cover every weight matrix a token passes through (attention
projections, FFN / active experts, router, LM head); the embedding lookup does no FLOPs. Attention-core FLOPs
(QK^T and AV) depend on how many keys a query attends to and are counted separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from suanli.catalog.llms import LLM, Architecture, computed_params, llm


@dataclass(frozen=True)
class Shape:
    key: str
    layers: int
    hidden: int
    heads: int
    qk_dim: int  # query/key head dim
    v_dim: int
    q_width: int  # heads x qk_dim
    kv_width: int  # width of the K and V activations (GQA: kv_heads x head_dim; MLA: heads x (qk+v)/2)
    ffn_width: int  # dense FFN intermediate size
    moe_layers: int
    experts: int
    experts_per_token: int
    shared_experts: int
    moe_width: int
    params_total: float
    params_active: float
    params_embedding: float
    params_head: float  # LM-head weights stored separately (0 when tied to the embedding)
    head_flop_params: float  # vocab x hidden: the LM-head matmul, tied or not
    params_routed: float  # all routed experts, all layers
    params_routed_active: float
    kv_values_per_token: float  # cached values per token over all layers (x bytes/value = KV bytes)
    max_positions: int = 0  # context window (prompt + output tokens)
    decode_qk_dim: int = 0  # per-head dims a decode step's attention core works in (MLA: the absorbed latent)
    decode_v_dim: int = 0
    vision_params: float = 0.0  # vision encoder weights (multimodal models)
    vision_flops_per_image_token: float = 0.0  # ViT forward FLOPs for one LLM image token (merge^2 patches)

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def linear_params_body(self) -> float:
        """Active weights a token multiplies through, without embedding and LM head."""
        return self.params_active - self.params_embedding - self.params_head

    def linear_flops_body(self) -> float:
        return 2.0 * self.linear_params_body

    def head_flops(self) -> float:
        return 2.0 * self.head_flop_params

    def attn_flops_per_key(self) -> float:
        """Forward attention-core FLOPs of one query token per attended key, all layers."""
        return 2.0 * self.heads * (self.qk_dim + self.v_dim) * self.layers

    def decode_attn_flops_per_key(self) -> float:
        """Attention-core FLOPs of one *decode* query per cached key, all layers. Equal to the prefill figure for
        GQA; for MLA the engines absorb the up-projections into the query and the output (DeepSeek-V3 inference
        code, FlashMLA), so each head attends over the cached latent: QK over ``kv_lora_rank + rope`` values
        and AV over ``kv_lora_rank`` values per key - 3.4x DeepSeek-V3's prefill figure per key."""
        per_head = (self.decode_qk_dim or self.qk_dim) + (self.decode_v_dim or self.v_dim)
        return 2.0 * self.heads * per_head * self.layers

    @property
    def is_multimodal(self) -> bool:
        return self.vision_params > 0

    def kv_bytes_per_token(self, bytes_per_value: float) -> float:
        return self.kv_values_per_token * bytes_per_value

    def dense_weight_params(self) -> float:
        """Weights every token touches (everything but the routed experts)."""
        return self.params_total - self.params_routed

    def activation_bytes_per_token_layer(self) -> float:
        """Activations one token leaves per layer for the backward pass, 16-bit, with flash attention (no s^2
        term) and no dropout, after Korthikanti et al. 2022 generalised to GQA / SwiGLU / MoE:
        attention 2h (norm input) + 2h (QKV input) + 2(q + 2 kv) (Q, K, V) + 2q (output-projection input);
        SwiGLU FFN 2h (input) + 4i (gate, up) + 2i (down-projection input), per active expert for MoE layers
        (each routed copy also keeps its 2h input); norms 4h. Bytes."""
        h = self.hidden
        attn = 4 * h + 4 * self.q_width + 4 * self.kv_width
        ffn_dense = 2 * h + 6 * self.ffn_width
        if self.is_moe:
            ffn_moe = 2 * h + (self.experts_per_token + self.shared_experts) * (2 * h + 6 * self.moe_width)
            frac_moe = self.moe_layers / self.layers
            ffn = frac_moe * ffn_moe + (1 - frac_moe) * ffn_dense
        else:
            ffn = ffn_dense
        return attn + ffn + 4 * h

def shape_of(model: LLM) -> Shape:
    a = model.architecture
    p = computed_params(a)
    if a.attention == "mla":
        kv_width = a.heads * (a.head_dim + a.v_dim) // 2
        assert a.kv_lora_rank is not None and a.qk_rope_head_dim is not None
        kv_values = a.layers * (a.kv_lora_rank + a.qk_rope_head_dim)
        dec_qk, dec_v = a.kv_lora_rank + a.qk_rope_head_dim, a.kv_lora_rank
    else:
        kv_width = a.kv_heads * a.head_dim
        kv_values = a.layers * 2 * a.kv_heads * a.head_dim
        dec_qk, dec_v = a.head_dim, a.v_dim
    vis_flops = 0.0
    if a.vision is not None:
        v = a.vision
        patches = v.spatial_merge * v.spatial_merge  # ViT tokens behind one LLM image token
        # linear layers of the ViT on every patch + the merger on the merged token; attention core over
        # windows of ~64-256 patches is small next to them and left out
        vis_flops = 2.0 * (p.vision - _merger_params(a)) * patches + 2.0 * _merger_params(a)
    m = a.moe
    return Shape(
        key=model.key, layers=a.layers, hidden=a.hidden, heads=a.heads, qk_dim=a.head_dim, v_dim=a.v_dim,
        q_width=a.heads * a.head_dim, kv_width=kv_width, ffn_width=a.intermediate,
        moe_layers=a.moe_layers, experts=m.routed_experts if m else 0,
        experts_per_token=m.experts_per_token if m else 0,
        shared_experts=m.shared_experts if m else 0, moe_width=m.moe_intermediate if m else 0,
        params_total=float(p.total), params_active=float(p.active), params_embedding=float(p.embedding),
        params_head=float(p.lm_head), head_flop_params=float(a.vocab * a.hidden), params_routed=float(p.routed_experts),
        params_routed_active=float(p.routed_experts_active), kv_values_per_token=float(kv_values),
        max_positions=a.max_positions, decode_qk_dim=dec_qk, decode_v_dim=dec_v, vision_params=float(p.vision),
        vision_flops_per_image_token=vis_flops,
    )


def _merger_params(a: Architecture) -> float:
    """Weights of the patch merger(s), which run once per merged (LLM) token rather than per patch."""
    v = a.vision
    assert v is not None
    m = v.hidden * v.spatial_merge * v.spatial_merge
    return float((1 + v.extra_mergers) * (v.hidden + m * m + m * v.out_hidden + (m + v.out_hidden if v.bias else 0)))


@cache
def shape(name: str) -> Shape:
    """Shape of catalog model ``name`` (key or alias); raises UnknownName."""
    return shape_of(llm(name))
