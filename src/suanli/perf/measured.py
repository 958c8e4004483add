"""Serving factors fitted on the user's own measurements (``suanli plan calibrate``).

A measurement is one run of ``suanli bench serve`` against a live endpoint of a known model on known chips:
output tokens/s at a mean number of requests in flight. The planner's prediction for the same replica at the same
batch (``estimate_serve`` with ``replica_chips`` and ``max_batch`` fixed) is proportional to the family's serving
factor when the fixed step costs scale with it (every term of the step time is divided by the factor, and the fixed
costs are divided by the same ratio), so the least-squares fit in log throughput of one factor for a vendor over
all its measurements is the geometric mean of measured / predicted, times the default factor.

The fitted set is a new family ``<vendor>-measured`` (``serve_eff`` and ``serve_eff_fp4`` scaled by the same
ratio, ``step_overhead_s`` and ``seq_overhead_s`` divided by it; kernel efficiencies and the training factors stay
as the default family has them). Measurements live in a
user file - ``$SUANLI_CALIBRATION_FILE``, else ``~/.suanli/calibration.json`` - that
:func:`suanli.perf.calibration.calibration_for` reads, so every ``suanli plan`` on that machine uses them.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from suanli.errors import SuanliError
from suanli.perf.calibration import FAMILIES, Calibration, family_of

ENV = "SUANLI_CALIBRATION_FILE"
MIN_BAND = 0.10  # smallest uncertainty band printed for a measured family (a few runs cannot show their spread)


def calibration_file() -> Path:
    """Where measurements are kept: ``$SUANLI_CALIBRATION_FILE``, else ``~/.suanli/calibration.json``."""
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else Path.home() / ".suanli" / "calibration.json"


@dataclass(frozen=True)
class Measurement:
    accelerator: str  # catalog key
    vendor: str
    model: str  # catalog key of the LLM behind the endpoint
    chips_per_replica: int
    replicas: int
    input_tokens: float  # mean prompt tokens per request
    output_tokens: float  # mean output tokens per request
    concurrency: float  # mean requests in flight over the run (all replicas)
    output_tokens_per_s: float  # measured, whole endpoint
    source: str = ""  # file / endpoint it came from
    recorded_at: float = 0.0

    @property
    def batch(self) -> int:
        """Sequences per replica the engine ran on average (at least 1)."""
        return max(1, round(self.concurrency / self.replicas))


@dataclass(frozen=True)
class Row:
    measurement: Measurement
    before: float | None  # predicted output tokens/s with the default family
    after: float | None  # with the fitted family

    def error(self, which: str) -> float | None:
        v = self.before if which == "before" else self.after
        return None if v is None else v / self.measurement.output_tokens_per_s - 1.0


@dataclass(frozen=True)
class Fit:
    vendor: str
    base: Calibration
    fitted: Calibration
    ratio: float  # fitted factor / default factor
    rows: list[Row]

    def rms(self, which: str) -> float | None:
        errs = [e for r in self.rows if (e := r.error(which)) is not None]
        return math.sqrt(sum(e * e for e in errs) / len(errs)) if errs else None


def predicted(m: Measurement, cal: Calibration) -> float | None:
    """Output tokens/s the planner predicts for the measured deployment at the measured batch under ``cal``."""
    from suanli.perf.serve import ServeJob, estimate_serve

    job = ServeJob(model=m.model, input_tokens=m.input_tokens, output_tokens=max(1.0, m.output_tokens),
                   chips=m.chips_per_replica, replica_chips=m.chips_per_replica, max_batch=m.batch)
    est = estimate_serve(job, m.accelerator, calibration=cal)
    return None if est.tokens_per_s is None else est.tokens_per_s * m.replicas


def measurement_from_result(result: dict[str, Any], *, accelerator: str, model: str | None = None,
                            chips_per_replica: int = 1, replicas: int = 1, source: str = "") -> Measurement:
    """A measurement from a ``suanli bench serve --json`` object (``model`` overrides the name the endpoint used,
    which need not be a catalog name)."""
    from suanli.catalog.accelerators import accelerator as catalog_accelerator
    from suanli.catalog.llms import resolve_llm

    if chips_per_replica < 1 or replicas < 1:
        raise SuanliError("--chips and --replicas must be >= 1")
    acc = catalog_accelerator(accelerator)
    name = model or result.get("model")
    if not isinstance(name, str):
        raise SuanliError("the result names no model: give the catalog model with --model")
    try:
        llm = resolve_llm(name)
    except SuanliError:
        raise SuanliError(f"{name!r} is not a catalog model: name the model behind the endpoint with --model "
                          "(see suanli catalog models)") from None

    def num(key: str) -> float:
        v = result.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise SuanliError(f"the result has no positive {key!r} (is it the JSON of suanli bench serve?)")
        return float(v)

    isl = result.get("mean_input_tokens") or result.get("input_tokens")
    osl = result.get("mean_output_tokens") or result.get("output_tokens")
    return Measurement(
        accelerator=acc.key, vendor=acc.vendor, model=llm, chips_per_replica=chips_per_replica, replicas=replicas,
        input_tokens=float(isl) if isinstance(isl, int | float) and isl > 0 else num("input_tokens"),
        output_tokens=float(osl) if isinstance(osl, int | float) and osl > 0 else num("output_tokens"),
        concurrency=num("mean_concurrency"), output_tokens_per_s=num("output_tokens_per_s"), source=source,
        recorded_at=time.time())


def load(path: Path | None = None) -> list[Measurement]:
    path = path or calibration_file()
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Measurement(**m) for m in data.get("measurements", [])]
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise SuanliError(f"calibration file {path} is unreadable ({e}); fix or remove it") from None


def save(measurements: list[Measurement], path: Path | None = None) -> Path:
    path = path or calibration_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"version": 1, "measurements": [asdict(m) for m in measurements]}, indent=2) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    _cache.clear()
    return path


def fit_vendor(vendor: str, measurements: list[Measurement]) -> Fit | None:
    """The fitted family of ``vendor`` from its measurements (None when it has none the planner can predict)."""
    base = FAMILIES[family_of(vendor)]
    mine = [m for m in measurements if m.vendor == vendor]
    pairs = [(m, p) for m in mine if (p := predicted(m, base)) is not None and p > 0]
    if not pairs:
        return None
    ratio = math.exp(sum(math.log(m.output_tokens_per_s / p) for m, p in pairs) / len(pairs))
    errs = [p * ratio / m.output_tokens_per_s - 1.0 for m, p in pairs]
    band = max(MIN_BAND, math.sqrt(sum(e * e for e in errs) / len(errs)))
    fitted = replace(
        base, family=f"{vendor.lower()}-measured", serve_eff=base.serve_eff * ratio,
        serve_eff_fp4=base.serve_eff_fp4 * ratio, step_overhead_s=base.step_overhead_s / ratio,
        seq_overhead_s=base.seq_overhead_s / ratio, confidence=f"measured ({len(pairs)} runs)", uncertainty=band,
        # MoE rows keep the default's wider band unless a MoE model was measured
        uncertainty_moe=band if any(_is_moe(m.model) for m, _ in pairs) else max(band, base.uncertainty_moe),
        sources=(*base.sources, ("serve_eff/serve_eff_fp4", f"fitted on {len(pairs)} measurement(s) of this "
                                 f"vendor in {calibration_file()} (suanli plan calibrate)")))
    rows = [Row(m, p, predicted(m, fitted)) for m, p in pairs]
    return Fit(vendor=vendor, base=base, fitted=fitted, ratio=ratio, rows=rows)


def _is_moe(model: str) -> bool:
    from suanli.perf.shape import shape

    return shape(model).is_moe


_cache: dict[tuple[str, float], dict[str, Calibration]] = {}


def measured_calibration(vendor: str) -> Calibration | None:
    """The family fitted on the user's measurements of ``vendor``, if the calibration file has any (cached on
    the file's path and modification time)."""
    path = calibration_file()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    key = (str(path), mtime)
    if key not in _cache:
        _cache.clear()
        fams: dict[str, Calibration] = {}
        ms = load(path)
        for v in sorted({m.vendor for m in ms}):
            f = fit_vendor(v, ms)
            if f is not None:
                fams[v] = f.fitted
        _cache[key] = fams
    return _cache[key].get(vendor)
