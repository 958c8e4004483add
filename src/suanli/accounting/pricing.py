"""How chip-time becomes energy and dollars.

- Energy: measured board energy where the executor read it (NVML's energy counter), else modelled as the planner
  does: TDP x (idle + (1 - idle) x busy) over the chip-time (``busy`` is an assumption of the fleet file's
  ``accounting`` section); times the PUE of the node's pool (facility overhead; a liquid-cooled pool has a lower one).
- Cost: the chip's purchase price (the pool's ``price_usd``, else the catalog's estimate) amortised over its service
  life at the fleet's utilisation (the planner's ``Money.capex_usd_per_chip_hour``), plus facility energy at the
  tariff, plus the pool's per-node-hour overhead charged pro rata to the chips used. An unknown price (or an energy
  that can be neither measured nor modelled) leaves the cost unknown (``None``), never zero.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from suanli.fleet.loaders import AccountingSpec, ClusterFile, PoolSpec, load_cluster_file
from suanli.perf.assumptions import Money

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class ChipFigures:
    tdp_w: float | None
    price_usd: float | None  # catalog estimate


@lru_cache(maxsize=256)
def catalog_figures(model: str) -> ChipFigures:
    """TDP and price of a catalog accelerator (both None when the model is not in the catalog)."""
    from suanli.perf.hardware import chip

    try:
        c = chip(model)
    except (KeyError, ValueError):
        return ChipFigures(None, None)
    return ChipFigures(c.tdp_w, c.price_usd)


@dataclass(frozen=True)
class Rates:
    """What one (node, accelerator model) costs."""

    pool: str | None
    pue: float
    tdp_w: float | None
    price_usd: float | None
    price_source: str  # "fleet file" | "catalog" | "unknown"
    node_hour_usd: float
    chips_per_node: int


@dataclass
class Accounting:
    settings: AccountingSpec = field(default_factory=AccountingSpec)
    pools: list[PoolSpec] = field(default_factory=list)
    _rates: dict[tuple[str, str], Rates] = field(default_factory=dict, repr=False, compare=False)
    _units: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_file(cls, path: str | Path | None) -> Accounting:
        if path is None:
            return cls()
        return cls.from_spec(load_cluster_file(path))

    @classmethod
    def from_spec(cls, spec: ClusterFile) -> Accounting:
        return cls(spec.accounting, list(spec.pools))

    @property
    def money(self) -> Money:
        s = self.settings
        return Money(amortisation_years=s.amortisation_years, utilisation=s.utilisation, usd_per_kwh=s.usd_per_kwh,
                     pue=s.pue, idle_power_frac=s.idle_power_frac)

    def pool_of(self, node: str, model: str) -> PoolSpec | None:
        """The pool a node belongs to: by its name patterns (``nodes``, default ``POOL-*``), else the only pool of
        its accelerator model."""
        for p in self.pools:
            pats = p.nodes if p.nodes is not None else [f"{p.name}-*"]
            if any(fnmatch.fnmatchcase(node, pat) for pat in pats):
                return p
        same = [p for p in self.pools if p.accelerator and model and p.accelerator.lower() == model.lower()]
        return same[0] if len(same) == 1 else None

    def rates(self, node: str, model: str) -> Rates:
        r = self._rates.get((node, model))
        if r is None:
            r = self._rates[(node, model)] = self._rates_of(node, model)
        return r

    def _rates_of(self, node: str, model: str) -> Rates:
        p = self.pool_of(node, model)
        cat = catalog_figures(model) if model else ChipFigures(None, None)
        price, src = (p.price_usd, "fleet file") if p is not None and p.price_usd is not None else (
            cat.price_usd, "catalog" if cat.price_usd is not None else "unknown")
        return Rates(pool=p.name if p is not None else None,
                     pue=p.pue if p is not None and p.pue is not None else self.settings.pue,
                     tdp_w=cat.tdp_w, price_usd=price, price_source=src,
                     node_hour_usd=(p.node_hour_usd or 0.0) if p is not None else 0.0,
                     chips_per_node=p.per_node if p is not None and p.per_node else 8)

    def _unit(self, node: str, model: str) -> tuple[float | None, float, float | None, float]:
        """Per (node, model), computed once: (modelled board watts or None, PUE / J_PER_KWH, dollars per chip-second
        of price and overhead or None, tariff)."""
        u = self._units.get((node, model))
        if u is None:
            r = self.rates(node, model)
            m = self.money
            watts = r.tdp_w * m.power_frac(self.settings.busy) if r.tdp_w is not None else None
            per_s = (None if r.price_usd is None else
                     (m.capex_usd_per_chip_hour(r.price_usd) + r.node_hour_usd / max(1, r.chips_per_node)) / 3600.0)
            u = self._units[(node, model)] = (watts, r.pue / J_PER_KWH, per_s, self.settings.usd_per_kwh)
        return u

    def price_rows(self, pairs: list[tuple[str, str]]
                   ) -> list[tuple[str, str, float | None, float, float | None]]:
        """Per (node, model), for pricing in the database (``Store.usage_by_job``): ``(node, model, modelled board
        watts or None, PUE / J per kWh, dollars per chip-second of price and overheads or None)``. Energy at the
        tariff (``settings.usd_per_kwh``) is added afterwards."""
        return [(node, model, *self._unit(node, model)[:3]) for node, model in pairs]

    def cost(self, node: str, model: str, chip_s: float, unmeasured_chip_s: float, measured_j: float
             ) -> tuple[float | None, float | None]:
        """(facility energy in kWh, dollars) of ``chip_s`` chip-seconds on ``node``, of which ``unmeasured_chip_s``
        had no measured energy and ``measured_j`` joules were measured on the rest. None: unknown."""
        watts, kwh_per_j, usd_per_s, tariff = self._unit(node, model)
        if unmeasured_chip_s > 0:
            if watts is None:
                return None, None
            kwh = (measured_j + unmeasured_chip_s * watts) * kwh_per_j
        else:
            kwh = measured_j * kwh_per_j
        if usd_per_s is None:
            return kwh, None
        return kwh, chip_s * usd_per_s + kwh * tariff
