"""Vendors: visible-devices variables, declared inventories, NVML discovery that works without a driver."""

from __future__ import annotations

import sys
import types

import pytest

from suanli import devices as dv
from suanli.errors import SuanliError


@pytest.mark.parametrize(("model", "env"), [
    ("H100", {"CUDA_VISIBLE_DEVICES": "0,2"}),
    ("910B", {"ASCEND_RT_VISIBLE_DEVICES": "0,2"}),
    ("S4000", {"MUSA_VISIBLE_DEVICES": "0,2"}),
    ("C500", {"CUDA_VISIBLE_DEVICES": "0,2"}),
    ("MLU370-X8", {"MLU_VISIBLE_DEVICES": "0,2"}),
    ("K100", {"HIP_VISIBLE_DEVICES": "0,2"}),
    ("R300", {"XPU_VISIBLE_DEVICES": "0,2"}),
    ("BI-V150", {"CUDA_VISIBLE_DEVICES": "0,2"}),
    ("BR100", {"BIREN_VISIBLE_DEVICES": "0,2", "SUPA_VISIBLE_DEVICES": "0,2"}),
    ("some-trace-gpu", {}),
])
def test_visible_devices_env_per_vendor(model: str, env: dict[str, str]) -> None:
    assert dv.visible_devices_env(model, [0, 2]) == env


def test_every_catalog_vendor_has_a_class() -> None:
    from suanli.catalog.accelerators import accelerators

    for a in accelerators():
        assert dv.vendor_of(a.key) is not dv.Unknown, a.vendor


def test_parse_declared() -> None:
    ds = dv.parse_declared("8xBR100")
    assert [d.index for d in ds] == list(range(8)) and {d.model for d in ds} == {"BR100"}
    assert all(d.declared for d in ds)
    assert len(dv.parse_declared("2xh100, 2xH100")) == 4
    for bad in ("BR100", "0xBR100", "8xNOPE", "2xH100,2xBR100", ""):
        with pytest.raises(SuanliError):
            dv.parse_declared(bad)


def test_discovery_without_driver_is_empty_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")

    def boom() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = boom  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert dv.Nvidia.discover() == []
    assert dv.discover() == []


def test_discovery_with_a_fake_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 1024**3)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    ds = dv.discover()
    assert [(d.index, d.model, d.uuid, d.declared) for d in ds] == [(0, "H100", "GPU-0", False),
                                                                    (1, "H100", "GPU-1", False)]


def test_nvidia_model_names() -> None:
    assert dv.nvidia_model("NVIDIA H200") == "H200"
    assert dv.nvidia_model("NVIDIA A100-SXM4-80GB", 81920) == "A100-80GB"
    assert dv.nvidia_model("NVIDIA GeForce RTX 4090") == "NVIDIA GeForce RTX 4090"


def test_host_cpu_memory() -> None:
    cpu, mem = dv.host_cpu_memory()
    assert cpu >= 1000 and mem > 0
