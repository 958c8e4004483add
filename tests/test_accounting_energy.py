"""Measured energy: NVML's energy counter through suanli.devices, read at an attempt's start and end; the report
uses it instead of the TDP model where it is there."""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from suanli import devices as dv
from suanli.accounting.pricing import Accounting
from suanli.control import db, usage
from suanli.control.store import Step, Store
from suanli.control.types import AttemptOutcome as O
from suanli.control.usage import make_report
from suanli.devices.nvidia import _Nvml
from suanli.workload.spec import JobSpec
from suanli.workload.states import JobState as S


class Counters:
    """An executor's energy_mj: node n1 readable, n2 not (another vendor), one device of n3 unreadable."""

    def __init__(self) -> None:
        self.mj = {("n1", 0): 1000.0, ("n1", 1): 5000.0, ("n3", 0): 10.0}

    def energy_mj(self, node: str, model: str, idx: Sequence[int]) -> list[float | None]:
        return [self.mj.get((node, i)) for i in idx]


def test_energy_is_the_counter_difference_per_node() -> None:
    ex = Counters()
    pl: dict[str, Any] = {"nodes": ["n1", "n2", "n3"], "local": [[0, 1], [0], [0, 1]], "milli": 1000, "model": "H100"}
    pl["energy_mj0"] = usage.energy_counters(ex, pl)
    assert pl["energy_mj0"] == {"n1": [1000.0, 5000.0]}  # only nodes whose every device is readable
    ex.mj[("n1", 0)] += 700_000.0  # 700 J
    ex.mj[("n1", 1)] += 300_000.0
    assert usage.energy_used(ex, pl) == {"n1": pytest.approx(1000.0)}
    ex.mj[("n1", 0)] = 0.0  # the driver reloaded: the counter went backwards -> not measured
    assert usage.energy_used(ex, pl) is None
    assert usage.energy_used(ex, {"nodes": ["n1"], "local": [[0]]}) is None  # nothing read at the start


def test_nvidia_energy_counter_through_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = types.ModuleType("pynvml")
    nv.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nv.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    nv.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nv.nvmlEventSetCreate = lambda: (_ for _ in ()).throw(RuntimeError("no events"))  # type: ignore[attr-defined]

    def total(h: int) -> int:
        if h == 1:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")  # pre-Volta: no counter
        return 123_456

    nv.nvmlDeviceGetTotalEnergyConsumption = total  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    _Nvml.reset()
    try:
        assert dv.energy_mj("H100", [0, 1]) == [123456.0, None]
        assert dv.energy_mj("BR100", [0]) == [None]  # vendors without a counter: not measured
        assert dv.energy_mj("no-such-chip", [0]) == [None]
    finally:
        _Nvml.reset()


def test_report_uses_measured_energy_where_there(tmp_path: Path) -> None:
    store = Store.open(db.sqlite_url(tmp_path / "e.db"))
    store.ensure_defaults()
    t = 1_700_000_000.0
    for measured in (True, False):
        jid = int(store.submit(JobSpec.model_validate({"name": "j", "command": ["true"]}))["id"])
        pl = {"nodes": ["h100-0000"], "local": [[0, 1]], "milli": 1000, "model": "H100"}
        aid, _ = store.begin_attempt(jid, t, pl, "t")
        store.finish_attempt(jid, aid, t + 3600, O.SUCCEEDED, 0, None, [Step(S.RUNNING, S.SUCCEEDED, "ok")],
                             energy_j={"h100-0000": 2 * 3.6e6 * 0.4} if measured else None)  # 0.8 kWh measured
    (row,) = make_report(store, since=t, until=t + 3600, by=(), acct=Accounting())["rows"]
    # measured 0.8 kWh + modelled 2 chip-hours x 700 W x 0.72 = 1.008 kWh; both x PUE 1.3
    assert row["energy_kwh"] == pytest.approx((0.8 + 1.008) * 1.3)
    assert row["energy_measured_share"] == pytest.approx(0.5)
    store.close()
