"""Vendor modules: parsers fed recorded tool output (tests/data/devices, sources in its README), discovery across
all vendors, health signals (NVML fake with XID/ECC/temperature/NVLink), the fault-injection seam."""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from suanli import devices as dv
from suanli.devices import base
from suanli.devices.nvidia import _Nvml
from suanli.errors import SpecError

DATA = Path(__file__).parent / "data" / "devices"


def sample(name: str) -> str:
    return (DATA / name).read_text()


def fake_tools(monkeypatch: pytest.MonkeyPatch, outputs: dict[str, str | None]) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []

    def run(argv: Sequence[str], timeout_s: float = 10.0) -> str | None:
        calls.append(tuple(argv))
        return outputs.get(argv[0])

    monkeypatch.setattr(base, "run_tool", run)
    return calls


@pytest.fixture(autouse=True)
def _no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")

    def boom() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv(dv.FAULTS_ENV, raising=False)
    monkeypatch.delenv(dv.FAULTS_FILE_ENV, raising=False)
    _Nvml.reset()


def test_npu_smi_parse() -> None:
    rows = dv.Huawei.parse(sample("npu-smi-info.txt").replace("xxx", "910B3"))
    assert [d.index for d, _ in rows] == list(range(8))
    d0, h0 = rows[0]
    assert (d0.model, d0.bus_id, d0.memory_mib) == ("910B", "0000:C1:00.0", 32768)
    assert h0.healthy and h0.signals["health_code"] == "OK" and h0.signals["temperature_c"] == 42
    assert rows[3][1].healthy and rows[3][1].signals["health_code"] == "Warning"  # a general alarm, still working
    bad = sample("npu-smi-info.txt").replace("| 2     xxx            | OK     ", "| 2     xxx            | Critical")
    h2 = dv.Huawei.parse(bad)[2][1]
    assert not h2.healthy and h2.reason == "Ascend health Critical"


def test_npu_smi_multi_chip_card_uses_logical_id() -> None:
    text = ("| 0     310P3          | OK            | 13.4        52                0    / 0             |\n"
            "| 0     0              | 0000:01:00.0  | 0           1562 / 21527                           |\n"
            "+======================+===============+====================================================+\n"
            "| 0     310P3          | OK            | 13.4        52                0    / 0             |\n"
            "| 1     1              | 0000:01:00.0  | 0           1562 / 21527                           |\n")
    rows = dv.Huawei.parse(text)
    assert [d.index for d, _ in rows] == [0, 1] and rows[0][0].memory_mib == 21527


def test_cnmon_parse() -> None:
    rows = dv.Cambricon.parse(sample("cnmon.txt"))
    assert [(d.index, d.model, d.bus_id, d.memory_mib) for d, _ in rows] == [
        (0, "MLU370-X8", "0000:39:00.0", 23374), (1, "MLU370-X8", "0000:3D:00.0", 23374)]
    assert rows[1][1].healthy and rows[1][1].signals["temperature_c"] == 39


def test_mx_smi_parse_and_state() -> None:
    rows = dv.MetaX.parse(sample("mx-smi-L.txt"))
    assert [(d.index, d.model, d.uuid) for d, _ in rows] == [
        (0, "C500", "GPU-e702f06b-bbd6-bc06-5196-90a5554a24ba"),
        (7, "C500", "GPU-0e715b45-bcef-1500-e2db-752724095700")]
    assert all(h.healthy for _, h in rows)
    bad = dv.MetaX.parse("GPU#1    MXC550      0000:2b:00.0   Not Available(MetaX Sysfs File Unaccessible)\n")
    assert bad[0][0].model == "C550"
    assert not bad[0][1].healthy and "Not Available" in bad[0][1].reason


def test_mthreads_gmi_parse() -> None:
    rows = dv.MooreThreads.parse(sample("mthreads-gmi.txt"))
    assert [(d.index, d.bus_id, d.memory_mib) for d, _ in rows] == [(0, "00000000:18:00.0", 81920),
                                                                     (1, "00000000:3a:00.0", 81920)]
    assert rows[0][0].model == "MTT S5000"  # not in the catalog: the tool's name is kept
    assert rows[0][1].signals["temperature_c"] == 48 and rows[0][1].signals["ecc_mode"] == "On-die, EDC"
    s80 = dv.MooreThreads.parse(sample("mthreads-gmi-s80.txt"))
    assert [(d.index, d.memory_mib) for d, _ in s80] == [(0, 16384)]


def test_ixsmi_parse() -> None:
    rows = dv.Iluvatar.parse(sample("ixsmi.csv"))
    assert [(d.index, d.model, d.memory_mib) for d, _ in rows] == [(0, "Iluvatar MR-V50", 16384),
                                                                    (1, "Iluvatar MR-V100", 32768)]
    assert rows[1][1].signals["temperature_c"] == 36


def test_hy_smi_parse() -> None:
    rows = dv.Hygon.parse(sample("hy-smi.json"))
    assert [(d.index, d.uuid, d.memory_mib) for d, _ in rows] == [(0, "7100fa8866904061", 65520)]
    k100 = dv.Hygon.parse('{"card3": {"Card Series": "K100_AI", "vram Total Memory (MiB)": "65520"}}')
    assert (k100[0][0].index, k100[0][0].model) == (3, "K100")


def test_discovery_spans_every_vendor(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tools(monkeypatch, {"npu-smi": sample("npu-smi-info.txt").replace("xxx", "910B3"),
                             "cnmon": sample("cnmon.txt")})
    by = dv.discover_by_vendor()
    assert set(by) == {"Huawei", "Cambricon"}
    ds = dv.discover()
    assert len(ds) == 10 and {d.model for d in ds} == {"910B", "MLU370-X8"}
    assert {d.vendor for d in ds} == {"Huawei", "Cambricon"} and not any(d.declared for d in ds)


def test_no_tools_no_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_tools(monkeypatch, {})
    assert dv.discover() == []
    assert {c[0] for c in calls} >= {"npu-smi", "cnmon", "mx-smi", "mthreads-gmi", "hy-smi", "ixsmi"}


def test_real_run_tool_missing_binary_is_none() -> None:
    assert base.run_tool(["suanli-no-such-tool-xyz"]) is None
    assert base.run_tool(["false"]) is None
    assert base.run_tool(["echo", "hi"]) == "hi\n"


def test_health_through_the_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    out = {"mx-smi": sample("mx-smi-L.txt")}
    fake_tools(monkeypatch, out)
    ds = dv.discover()
    assert [d.index for d in ds] == [0, 7]
    hs = dv.health([*ds, dv.LocalDevice(3, "C500", vendor="MetaX")])
    assert [h.healthy for h in hs] == [True, True, False] and hs[2].reason == "not reported by mx-smi"
    out["mx-smi"] = None  # the tool stops answering: every device is unhealthy, with why
    hs = dv.health(ds)
    assert not any(h.healthy for h in hs) and hs[0].reason == "mx-smi did not answer"


def test_declared_devices_are_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_tools(monkeypatch, {})
    hs = dv.health(dv.parse_declared("4xMLU370-X8"))
    assert [h.healthy for h in hs] == [True] * 4 and calls == []


def test_fault_injection_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ds = dv.parse_declared("8xBR100")
    monkeypatch.setenv(dv.FAULTS_ENV, "2=xid 79, junk, 5=")
    hs = dv.health(ds, node="n1")
    assert [h.index for h in hs if not h.healthy] == [2, 5]
    assert hs[2].reason == "injected: xid 79" and hs[5].reason == "injected: fault"
    monkeypatch.delenv(dv.FAULTS_ENV)
    f = tmp_path / "faults.json"
    monkeypatch.setenv(dv.FAULTS_FILE_ENV, str(f))
    assert all(h.healthy for h in dv.health(ds, node="n1"))  # no file yet: nothing injected
    dv.set_fault(f, "n1", 3, "ecc storm")
    dv.set_fault(f, "*", 7, "fan")
    assert [(h.index, h.reason) for h in dv.health(ds, node="n1") if not h.healthy] == [
        (3, "injected: ecc storm"), (7, "injected: fan")]
    assert [h.index for h in dv.health(ds, node="n2") if not h.healthy] == [7]  # other node: only the '*' fault
    dv.set_fault(f, "n1", 3, None)
    assert [h.index for h in dv.Declared.health(range(8), node="n1") if not h.healthy] == [7]
    f.write_text("{not json")
    assert all(h.healthy for h in dv.health(ds, node="n1"))  # a broken file never takes the agent down


def test_fault_overrides_a_vendor_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tools(monkeypatch, {"cnmon": sample("cnmon.txt")})
    monkeypatch.setenv(dv.FAULTS_ENV, "1=overheat")
    hs = dv.Cambricon.health([0, 1])
    assert [h.healthy for h in hs] == [True, False] and hs[1].reason == "injected: overheat"


def test_labels() -> None:
    ds = dv.declared_from_labels({dv.DEVICES_LABEL: "8xBR100", dv.RACK_LABEL: "r1"})
    assert ds is not None and len(ds) == 8 and all(d.declared for d in ds)
    assert dv.declared_from_labels({"ray.io/node-id": "x"}) is None
    with pytest.raises(SpecError, match=r"label suanli\.io/devices"):
        dv.declared_from_labels({dv.DEVICES_LABEL: "eight BR100"})


def test_every_vendor_says_what_it_cannot_do() -> None:
    for v in dv.VENDORS:
        assert v.limitations and v.tool and v.visible_env, v.name
    assert dv.Enflame.env_for([1, 3]) == {"TOPS_VISIBLE_DEVICES": "1,3", "ENFLAME_VISIBLE_DEVICES": "1,3"}
    assert "TOPS_VISIBLE_DEVICES" in dv.all_visible_env_vars()
    assert dv.Kunlunxin.discover() == [] and dv.Biren.discover() == []


class FakeNvml(types.ModuleType):
    """Enough of pynvml for the health probe: two GPUs, scripted XID events and counters."""

    NVML_NVLINK_MAX_LINKS = 4
    nvmlEventTypeXidCriticalError = 8

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.count = 2
        self.events: list[Any] = []
        self.ecc = {0: 0, 1: 0}
        self.temp = {0: 40, 1: 40}
        self.links = {0: [True, True, True, True], 1: [True, True, True, True]}
        self.lost: set[int] = set()

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: return self.count

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        if i in self.lost:
            raise RuntimeError("GPU is lost")
        return i

    def nvmlDeviceGetIndex(self, h: int) -> int: return h
    def nvmlDeviceGetUUID(self, h: int) -> str: return f"GPU-{h}"
    def nvmlEventSetCreate(self) -> str: return "set"
    def nvmlDeviceRegisterEvents(self, h: int, mask: int, es: str) -> None: ...

    def nvmlEventSetWait(self, es: str, timeout_ms: int) -> Any:
        if not self.events:
            raise RuntimeError("Timeout")
        return self.events.pop(0)

    def nvmlDeviceGetTotalEccErrors(self, h: int, kind: int, counter: int) -> int: return self.ecc[h]
    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int: return self.temp[h]
    def nvmlDeviceGetTemperatureThreshold(self, h: int, kind: int) -> int: return 90

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        return int(self.links[h][link])


def test_nvml_health_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    nv = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    _Nvml.reset()
    hs = dv.Nvidia.health([0, 1, 2])
    assert [h.healthy for h in hs] == [True, True, False] and hs[2].reason == "not reported by NVML"
    assert hs[0].signals == {"ecc_uncorrected": 0, "temperature_c": 40, "nvlink_active": 4}
    nv.events = [types.SimpleNamespace(device=0, eventData=13),  # application XID: ignored
                 types.SimpleNamespace(device=1, eventData=79)]  # fell off the bus
    hs = dv.Nvidia.health([0, 1])
    assert hs[0].healthy and not hs[1].healthy and hs[1].reason == "XID 79"
    assert not dv.Nvidia.health([1])[0].healthy  # sticky: the event is gone, the device stays drained
    nv.ecc[0], nv.temp[0] = 2, 91
    r = dv.Nvidia.health([0])[0]
    assert not r.healthy and "2 uncorrected ECC errors" in r.reason and "shutdown threshold 90 C" in r.reason
    nv.ecc[0], nv.temp[0] = 0, 40
    nv.links[0][2] = False
    r = dv.Nvidia.health([0])[0]
    assert not r.healthy and r.reason == "NVLink 2 down" and r.signals["nvlink_active"] == 3
    nv.lost.add(0)
    r = dv.Nvidia.health([0])[0]
    assert not r.healthy and "GPU is lost" in r.reason
    _Nvml.reset()


def test_nvml_absent_health_says_so() -> None:
    hs = dv.Nvidia.health([0])
    assert not hs[0].healthy and hs[0].reason.startswith("NVML unavailable")
