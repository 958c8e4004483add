"""Facts: accelerator specs and LLM architectures, each figure with its public source (package data)."""

from suanli.catalog.accelerators import (
    Accelerator,
    Figure,
    accelerator,
    accelerators,
    resolve_accelerator,
)

__all__ = ["Accelerator", "Figure", "accelerator", "accelerators", "resolve_accelerator"]
