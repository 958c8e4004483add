"""Facts: accelerator specs and LLM architectures, each figure with its public source (package data)."""

from suanli.catalog.accelerators import (
    Accelerator,
    Figure,
    accelerator,
    accelerators,
    resolve_accelerator,
)
from suanli.catalog.llms import (
    LLM,
    Architecture,
    MoE,
    computed_kv_bytes_per_token,
    computed_params,
    llm,
    llms,
    resolve_llm,
)

__all__ = [
    "LLM",
    "Accelerator",
    "Architecture",
    "Figure",
    "MoE",
    "accelerator",
    "accelerators",
    "computed_kv_bytes_per_token",
    "computed_params",
    "llm",
    "llms",
    "resolve_accelerator",
    "resolve_llm",
]
