"""Assumptions about the cluster and the money that are not properties of a chip; printed under every plan and
overridable from the CLI / API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

DEFAULT_SCALEUP = 8  # chips per scale-up domain of an HGX-style 8-GPU server


@dataclass(frozen=True)
class Cluster:
    """How the chips are wired."""

    # chips per scale-up domain (NVLink / HCCS / BLink / UB); None = the chip's own: 8 for a server chip, the whole
    # domain for a rack-scale system of the catalog (GB200 NVL72: 72, CloudMatrix 384: 384)
    scaleup_size: int | None = None
    scaleout_gbps: float = 50.0  # per-chip scale-out bandwidth, GB/s each way: one 400 Gb/s NIC per chip
    # (the DeepSeek-V3 report's H800 cluster: 8x 400 Gb/s InfiniBand per 8-GPU node)

    def for_chip(self, chip_domain: int | None) -> Cluster:
        """This cluster with a concrete scale-up size for a chip whose catalog domain is ``chip_domain``."""
        if self.scaleup_size is not None:
            return self
        return replace(self, scaleup_size=chip_domain or DEFAULT_SCALEUP)

    @property
    def domain(self) -> int:
        return self.scaleup_size or DEFAULT_SCALEUP


@dataclass(frozen=True)
class Money:
    """How a chip-hour becomes dollars: purchase price amortised over its service life, plus electricity."""

    amortisation_years: float = 4.0  # straight-line depreciation period of the purchase price
    utilisation: float = 0.8  # fraction of the service life the chip is busy with paid work (amortisation base)
    usd_per_kwh: float = 0.10  # industrial electricity price
    pue: float = 1.3  # data-centre power usage effectiveness (facility energy / IT energy)
    idle_power_frac: float = 0.3  # board power at idle, fraction of TDP; busy power rises linearly to TDP

    def capex_usd_per_chip_hour(self, price_usd: float) -> float:
        return price_usd / (self.amortisation_years * 8760.0 * self.utilisation)

    def power_frac(self, busy: float) -> float:
        """Average board power as a fraction of TDP when the tensor units are ``busy`` (0..1) of the time."""
        b = min(1.0, max(0.0, busy))
        return self.idle_power_frac + (1.0 - self.idle_power_frac) * b

    def describe(self) -> str:
        return (f"price amortised over {self.amortisation_years:g} years at {self.utilisation:.0%} utilisation; "
                f"electricity ${self.usd_per_kwh:g}/kWh, PUE {self.pue:g}; "
                f"board power = TDP x ({self.idle_power_frac:g} + {1 - self.idle_power_frac:g} x busy)")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
