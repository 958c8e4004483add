"""NVIDIA through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``), guarded so that a machine without
the library or the driver discovers nothing instead of failing.

Health, as the NVIDIA k8s device plugin and HAMi judge it (``rm/health.go``):

- XID errors from NVML's event set (``nvmlEventTypeXidCriticalError``), drained on each probe and sticky until the
  process restarts (a device that fell off the bus does not come back by itself). XIDs that are the application's
  fault, not the device's, are ignored, as the device plugin does: 13 (graphics engine exception), 31 (memory page
  fault), 43 (GPU stopped processing, user-space), 45 (preemptive cleanup), 68 (video decoder), 109 (context switch
  timeout, usually an application).
- Uncorrected (volatile) ECC errors; a pending page retirement or a row-remapping failure (the device needs a reset).
- Temperature at or above the shutdown threshold NVML reports (95 C when it does not).
- NVLink: a link seen active once and inactive now (a board whose links were never up is not judged on them).
- A device NVML cannot open (``GPU is lost``) or no longer counts is unhealthy.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Sequence
from typing import Any

from suanli.catalog.accelerators import resolve_accelerator
from suanli.devices.base import DeviceHealth, LocalDevice, Vendor
from suanli.errors import UnknownName

APP_XIDS = frozenset({13, 31, 43, 45, 68, 109})
DEFAULT_SHUTDOWN_C = 95


def nvidia_model(name: str, memory_mib: int | None = None) -> str:
    """Catalog key for an NVML device name ('NVIDIA H100 80GB HBM3' -> 'H100'); the name itself if unknown."""
    s = name.upper().replace("NVIDIA", "").strip()
    for token in re.split(r"[\s-]+", s):
        if token == "A100":
            return "A100-80GB" if memory_mib is None or memory_mib > 60_000 else name
        try:
            return resolve_accelerator(token)
        except UnknownName:
            continue
    return name


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class _Nvml:
    """NVML kept initialised for health probes, with one XID event set over every device (created lazily)."""

    lock = threading.Lock()
    mod: Any = None
    events: Any = None
    xids: dict[int, list[int]] = {}  # noqa: RUF012 - process-wide state by design
    nvlink_seen: dict[str, set[int]] = {}  # noqa: RUF012

    @classmethod
    def get(cls) -> Any:
        with cls.lock:
            if cls.mod is not None:
                return cls.mod
            import pynvml

            pynvml.nvmlInit()
            cls.mod = pynvml
            try:
                es = pynvml.nvmlEventSetCreate()
                for i in range(pynvml.nvmlDeviceGetCount()):
                    with contextlib.suppress(Exception):
                        h = pynvml.nvmlDeviceGetHandleByIndex(i)
                        pynvml.nvmlDeviceRegisterEvents(h, pynvml.nvmlEventTypeXidCriticalError, es)
                cls.events = es
            except Exception:
                cls.events = None  # no event support (some vGPU/containers): the other signals still apply
            return pynvml

    @classmethod
    def drain_xids(cls, nv: Any) -> None:
        if cls.events is None:
            return
        for _ in range(1024):
            try:
                ev = nv.nvmlEventSetWait(cls.events, 0)
            except Exception:
                return  # NVML_ERROR_TIMEOUT: nothing pending
            xid = int(getattr(ev, "eventData", 0))
            if xid in APP_XIDS:
                continue
            try:
                idx = int(nv.nvmlDeviceGetIndex(ev.device))
            except Exception:
                continue
            cls.xids.setdefault(idx, []).append(xid)

    @classmethod
    def reset(cls) -> None:
        """Forget the state (tests use it between fake libraries)."""
        with cls.lock:
            cls.mod = None
            cls.events = None
            cls.xids = {}
            cls.nvlink_seen = {}


def _probe_one(nv: Any, i: int) -> DeviceHealth:
    try:
        h = nv.nvmlDeviceGetHandleByIndex(i)
    except Exception as e:
        return DeviceHealth(i, False, f"NVML cannot open the device: {e}")
    sig: dict[str, str | int | float | bool] = {}
    bad: list[str] = []
    xids = _Nvml.xids.get(i)
    if xids:
        sig["xid"] = ",".join(map(str, xids))
        bad.append(f"XID {xids[-1]}")
    with contextlib.suppress(Exception):
        n = int(nv.nvmlDeviceGetTotalEccErrors(h, getattr(nv, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1),
                                               getattr(nv, "NVML_VOLATILE_ECC", 0)))
        sig["ecc_uncorrected"] = n
        if n > 0:
            bad.append(f"{n} uncorrected ECC errors")
    with contextlib.suppress(Exception):
        if int(nv.nvmlDeviceGetRetiredPagesPendingStatus(h)):
            sig["retired_pages_pending"] = True
            bad.append("page retirement pending (reset needed)")
    with contextlib.suppress(Exception):
        rr = nv.nvmlDeviceGetRemappedRows(h)
        if len(rr) >= 4 and rr[3]:
            sig["row_remap_failure"] = True
            bad.append("row remapping failed")
    with contextlib.suppress(Exception):
        t = int(nv.nvmlDeviceGetTemperature(h, getattr(nv, "NVML_TEMPERATURE_GPU", 0)))
        sig["temperature_c"] = t
        limit = DEFAULT_SHUTDOWN_C
        with contextlib.suppress(Exception):
            limit = int(nv.nvmlDeviceGetTemperatureThreshold(
                h, getattr(nv, "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN", 0)))
        if t >= limit:
            bad.append(f"temperature {t} C at or above shutdown threshold {limit} C")
    key = str(i)
    with contextlib.suppress(Exception):
        key = _s(nv.nvmlDeviceGetUUID(h))
    active, down = 0, []
    seen = _Nvml.nvlink_seen.setdefault(key, set())
    for link in range(int(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18))):
        try:
            up = bool(nv.nvmlDeviceGetNvLinkState(h, link))
        except Exception:
            continue  # link absent / NVLink not supported
        if up:
            active += 1
            seen.add(link)
        elif link in seen:
            down.append(link)
    if seen:
        sig["nvlink_active"] = active
    if down:
        bad.append("NVLink " + ",".join(map(str, down)) + " down")
    return DeviceHealth(i, not bad, "; ".join(bad), sig)


class Nvidia(Vendor):
    name = "NVIDIA"
    visible_env = ("CUDA_VISIBLE_DEVICES",)
    tool = "NVML"
    limitations = (
        "XID errors are seen only while this process watches (NVML delivers events, it keeps no history)",
        "MIG instances are not discovered separately: a MIG-enabled GPU is one device",
    )

    @classmethod
    def discover(cls) -> list[LocalDevice]:
        """Devices NVML reports; an empty list (never an error) when the library or the driver is missing."""
        try:
            import pynvml
        except Exception:
            return []
        try:
            pynvml.nvmlInit()
        except Exception:
            return []
        out: list[LocalDevice] = []
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = _s(pynvml.nvmlDeviceGetName(h))
                uuid = _s(pynvml.nvmlDeviceGetUUID(h))
                mem = int(pynvml.nvmlDeviceGetMemoryInfo(h).total) // (1024 * 1024)
                bus = None
                with contextlib.suppress(Exception):
                    bus = _s(pynvml.nvmlDeviceGetPciInfo(h).busId)
                out.append(LocalDevice(i, nvidia_model(name, mem), uuid, mem, False, bus, cls.name))
        except Exception:
            return out
        finally:
            with contextlib.suppress(Exception):
                pynvml.nvmlShutdown()
        return out

    @classmethod
    def energy_mj(cls, local_indices: Sequence[int]) -> list[float | None]:
        """NVML's total energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ; Volta and newer)."""
        try:
            nv = _Nvml.get()
        except Exception:
            return [None for _ in local_indices]
        out: list[float | None] = []
        for i in local_indices:
            try:
                out.append(float(nv.nvmlDeviceGetTotalEnergyConsumption(nv.nvmlDeviceGetHandleByIndex(i))))
            except Exception:
                out.append(None)
        return out

    @classmethod
    def probe(cls, local_indices: Sequence[int]) -> list[DeviceHealth]:
        try:
            nv = _Nvml.get()
        except Exception as e:
            return [DeviceHealth(i, False, f"NVML unavailable: {e}") for i in local_indices]
        _Nvml.drain_xids(nv)
        try:
            count = int(nv.nvmlDeviceGetCount())
        except Exception as e:
            return [DeviceHealth(i, False, f"NVML cannot count devices: {e}") for i in local_indices]
        return [_probe_one(nv, i) if i < count else DeviceHealth(i, False, "not reported by NVML")
                for i in local_indices]
