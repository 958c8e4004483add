"""The planner's view of an accelerator: the catalog figures it needs, per precision, with unknowns kept unknown.

Everything comes from the accelerator catalog (``suanli.catalog``). A figure that is unknown stays ``None``; the
estimators then answer ``None`` for what depends on it and say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from suanli.catalog.accelerators import Accelerator, accelerator
from suanli.perf.calibration import Calibration, calibration_for
from suanli.perf.shape import Shape, shape

Precision = Literal["fp4", "fp8", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp4", "fp8", "bf16")
BYTES_PER_PARAM: dict[str, float] = {
    "bf16": 2.0,
    "fp8": 1.0,
    "fp4": 0.5625,  # 4-bit values + one 8-bit scale per 16 values (NVFP4 block scaling)
}

# Host-link fallback when a chip has no device-to-device link figure: PCIe x16, GB/s per direction.
PCIE_X16_GBPS: dict[int, float] = {3: 16.0, 4: 32.0, 5: 64.0}


@dataclass(frozen=True)
class Chip:
    """Figures of one accelerator the planner uses (``None`` = unknown)."""

    key: str
    vendor: str
    name: str
    bf16_tflops: float | None
    fp8_tflops: float | None
    fp4_tflops: float | None
    memory_gb: float | None
    memory_bw_gbps: float | None
    link_gbps_per_dir: float | None  # scale-up (device-to-device) bandwidth, one direction
    link_kind: str  # "link" | "pcie" | "none"
    tdp_w: float | None
    price_usd: float | None
    sources: dict[str, str] = field(default_factory=dict)
    scaleup_domain: int | None = None  # chips in one scale-up domain of a rack-scale system (None: server, 8)
    system: str | None = None  # the rack-scale system this chip is sold in, e.g. "GB200 NVL72"

    def peak_tflops(self, precision: str) -> float | None:
        return {"bf16": self.bf16_tflops, "fp8": self.fp8_tflops, "fp4": self.fp4_tflops}[precision]

    def supports(self, precision: str) -> bool:
        return self.peak_tflops(precision) is not None

    def missing(self, *fields: str) -> list[str]:
        return [f for f in fields if getattr(self, f) is None]


def _num(acc: Accelerator, name: str) -> float | None:
    v = acc.value(name)
    return float(v) if isinstance(v, int | float) else None


def chip(name: str) -> Chip:
    """The planner's view of catalog accelerator ``name`` (key or alias); raises UnknownName."""
    acc = accelerator(name)
    sources = {f: s for f in ("bf16_tflops", "fp8_tflops", "fp4_tflops", "memory_bw_gbps", "memory_gb",
                              "interconnect_bw_gbps", "tdp_w", "price_usd", "scaleup_domain")
               if (s := acc.source_of(f))}
    link = _num(acc, "interconnect_bw_gbps")
    if link is not None:
        # catalog link figures are bidirectional aggregates per device (NVLink 900 GB/s = 450 each way)
        link_dir, kind = link / 2.0, "link"
    else:
        gen = _num(acc, "pcie_gen")
        link_dir = PCIE_X16_GBPS.get(int(gen)) if gen is not None else None
        kind = "pcie" if link_dir is not None else "none"
    return Chip(
        key=acc.key, vendor=acc.vendor, name=acc.name,
        bf16_tflops=_num(acc, "bf16_tflops"), fp8_tflops=_num(acc, "fp8_tflops"), fp4_tflops=_num(acc, "fp4_tflops"),
        memory_gb=_num(acc, "memory_gb"), memory_bw_gbps=_num(acc, "memory_bw_gbps"),
        link_gbps_per_dir=link_dir, link_kind=kind,
        tdp_w=_num(acc, "tdp_w"), price_usd=_num(acc, "price_usd"), sources=sources,
        scaleup_domain=int(d) if (d := _num(acc, "scaleup_domain")) is not None else None,
        system=acc.name if acc.value("scaleup_domain") is not None else None,
    )


def setup(model: str, accelerator: str, calibration: Calibration | None = None
          ) -> tuple[Chip, Shape, Calibration, dict[str, Any], str | None]:
    """What every estimate starts from: the chip, the model's shape, the calibration that applies, the fields
    that head its result row, and why it cannot be estimated (figures unknown in the catalog) or None."""
    c = chip(accelerator)
    s = shape(model)
    cal = calibration or calibration_for(c.vendor)
    fields = {"accelerator": c.key, "vendor": c.vendor, "family": cal.family, "model": s.key,
              "confidence": cal.confidence, "uncertainty": cal.uncertainty_moe if s.is_moe else cal.uncertainty}
    missing = c.missing("bf16_tflops", "memory_gb", "memory_bw_gbps")
    return c, s, cal, fields, (f"unknown in the catalog: {', '.join(missing)}" if missing else None)
