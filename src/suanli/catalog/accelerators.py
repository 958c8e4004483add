"""The accelerator catalog: one entry per chip (package), every figure with the key of its source.

Unknown figures stay ``None``; :meth:`Accelerator.require` raises :class:`UnknownFigure` with a message that names
the chip and the figure, so that code which needs a figure never silently guesses it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from suanli.errors import UnknownFigure, UnknownName

FIGURE_FIELDS: tuple[str, ...] = (
    "dies",
    "memory_gb",
    "memory_type",
    "memory_bw_gbps",
    "bf16_tflops",
    "fp16_tflops",
    "fp8_tflops",
    "fp4_tflops",
    "int8_tops",
    "interconnect",
    "interconnect_bw_gbps",
    "pcie_gen",
    "tdp_w",
    "price_usd",
    "scaleup_domain",
)


class Figure(BaseModel):
    """One figure of the catalog: its value (``None`` = unknown), the key of its source and a note."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    value: float | int | str | None = None
    source: str | None = None
    note: str | None = None

    @property
    def known(self) -> bool:
        return self.value is not None


class Accelerator(BaseModel):
    """An accelerator package (a chip as the scheduler sees it; it may hold several dies)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: str
    vendor: str
    name: str
    aliases: tuple[str, ...] = ()
    sources: dict[str, str] = Field(default_factory=dict)
    dies: Figure
    memory_gb: Figure
    memory_type: Figure
    memory_bw_gbps: Figure
    bf16_tflops: Figure
    fp16_tflops: Figure = Field(default_factory=Figure)  # dense FP16 (tensor) peak: the figure of pre-BF16 GPUs
    fp8_tflops: Figure
    fp4_tflops: Figure = Field(default_factory=Figure)  # dense FP4 peak, where the chip has FP4 tensor units
    int8_tops: Figure
    interconnect: Figure
    interconnect_bw_gbps: Figure
    pcie_gen: Figure
    tdp_w: Figure
    price_usd: Figure
    # chips in one scale-up domain, given only for rack-scale systems sold as one unit (GB200 NVL72: 72); a
    # server chip leaves it unknown and the planner assumes 8-chip servers
    scaleup_domain: Figure = Field(default_factory=Figure)

    @model_validator(mode="after")
    def _every_figure_is_sourced(self) -> Accelerator:
        for name in FIGURE_FIELDS:
            fig: Figure = getattr(self, name)
            if fig.value is not None:
                if fig.source is None:
                    raise ValueError(f"{self.key}.{name} has a value but no source")
                if fig.source not in self.sources:
                    raise ValueError(f"{self.key}.{name} names source {fig.source!r}, not in sources")
        return self

    def value(self, name: str) -> Any:
        """The value of figure ``name`` or ``None`` when unknown."""
        if name not in FIGURE_FIELDS:
            raise KeyError(name)
        fig: Figure = getattr(self, name)
        return fig.value

    def require(self, name: str, purpose: str = "") -> float:
        """The numeric value of figure ``name``; raises :class:`UnknownFigure` when the catalog has none."""
        v = self.value(name)
        if v is None:
            why = f" (needed for {purpose})" if purpose else ""
            note = getattr(self, name).note
            extra = f"; note: {note}" if note else ""
            raise UnknownFigure(
                f"{self.vendor} {self.key}: {name} is unknown in the catalog{why} - no credible public figure"
                f"{extra}"
            )
        return float(v)

    def source_of(self, name: str) -> str | None:
        fig: Figure = getattr(self, name)
        return self.sources.get(fig.source) if fig.source else None

    @property
    def dies_or_one(self) -> int:
        """Die count for placement; a package whose die count is unknown is treated as one die."""
        v = self.dies.value
        return int(v) if v is not None else 1

    @property
    def memory_mib(self) -> int | None:
        v = self.memory_gb.value
        return int(float(v) * 1e9 / 2**20) if v is not None else None


def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


@cache
def _load() -> tuple[dict[str, Accelerator], dict[str, str]]:
    text = resources.files("suanli.catalog").joinpath("data/accelerators.yaml").read_text(encoding="utf-8")
    # libyaml's loader when PyYAML has it (0.02 s instead of 0.15 s for this file: every `suanli sim` reads it)
    raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    by_key: dict[str, Accelerator] = {}
    alias: dict[str, str] = {}
    for entry in raw["accelerators"]:
        acc = Accelerator.model_validate(entry)
        if acc.key in by_key:
            raise ValueError(f"duplicate accelerator key {acc.key}")
        by_key[acc.key] = acc
        for a in (acc.key, *acc.aliases):
            n = _norm(a)
            if n in alias and alias[n] != acc.key:
                raise ValueError(f"alias {a!r} names both {alias[n]} and {acc.key}")
            alias[n] = acc.key
    return by_key, alias


def accelerators() -> list[Accelerator]:
    """Every accelerator of the catalog, in catalog order."""
    return list(_load()[0].values())


def resolve_accelerator(name: str) -> str:
    """The catalog key for ``name`` (a key or an alias, any case); raises :class:`UnknownName`."""
    by_key, alias = _load()
    if name in by_key:
        return name
    key = alias.get(_norm(name))
    if key is None:
        known = ", ".join(by_key)
        raise UnknownName(f"unknown accelerator {name!r}; known: {known}")
    return key


def accelerator(name: str) -> Accelerator:
    """The catalog entry for ``name`` (key or alias)."""
    return _load()[0][resolve_accelerator(name)]


def is_known_accelerator(name: str) -> bool:
    try:
        resolve_accelerator(name)
    except UnknownName:
        return False
    return True
