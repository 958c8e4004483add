"""Accelerator vendors as the executor sees them: how to discover devices and how to hand a process its devices.

One small class per vendor. ``visible_env`` names the environment variable(s) the vendor's runtime reads to
restrict a process to some devices (the ``CUDA_VISIBLE_DEVICES`` idea). Where a variable is not documented by the
vendor in public, the choice and its evidence are written next to it; ``docs/control.md`` lists them all.

Discovery exists for NVIDIA (NVML through nvidia-ml-py, guarded so that it works with no driver at all). Other
vendors' devices are declared by hand (``suanli up --devices 8xBR100``) until their management libraries are wired
in; declared devices are marked as declared everywhere they are shown.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import ClassVar

from suanli.catalog.accelerators import accelerator, resolve_accelerator
from suanli.errors import SpecError, UnknownName


@dataclass(frozen=True, slots=True)
class LocalDevice:
    """One accelerator of this machine."""

    index: int  # local index, as the vendor's visible-devices variable counts
    model: str  # catalog key, or the name the driver reports when the catalog does not know it
    uuid: str | None = None
    memory_mib: int | None = None
    declared: bool = False  # declared by hand (not discovered)


class Vendor:
    """A vendor: its name in the catalog, its visible-devices variable(s) and, where possible, discovery."""

    name: ClassVar[str] = ""
    visible_env: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def env_for(cls, local_indices: list[int]) -> dict[str, str]:
        v = ",".join(str(i) for i in local_indices)
        return dict.fromkeys(cls.visible_env, v)

    @classmethod
    def discover(cls) -> list[LocalDevice]:
        return []


class Nvidia(Vendor):
    name = "NVIDIA"
    visible_env = ("CUDA_VISIBLE_DEVICES",)

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
                name = pynvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                uuid = pynvml.nvmlDeviceGetUUID(h)
                uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
                mem = int(pynvml.nvmlDeviceGetMemoryInfo(h).total) // (1024 * 1024)
                out.append(LocalDevice(i, nvidia_model(name, mem), uuid, mem))
        except Exception:
            return out
        finally:
            with contextlib.suppress(Exception):
                pynvml.nvmlShutdown()
        return out


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


class Huawei(Vendor):
    name = "Huawei"
    visible_env = ("ASCEND_RT_VISIBLE_DEVICES",)  # CANN runtime


class MooreThreads(Vendor):
    name = "Moore Threads"
    visible_env = ("MUSA_VISIBLE_DEVICES",)  # MUSA runtime


class MetaX(Vendor):
    name = "MetaX"
    # MACA is CUDA-compatible: Ray's MetaxGPUAcceleratorManager uses CUDA_VISIBLE_DEVICES for MetaX GPUs.
    visible_env = ("CUDA_VISIBLE_DEVICES",)


class Cambricon(Vendor):
    name = "Cambricon"
    visible_env = ("MLU_VISIBLE_DEVICES",)  # CNRT / torch_mlu


class Hygon(Vendor):
    name = "Hygon"
    visible_env = ("HIP_VISIBLE_DEVICES",)  # DCU runs ROCm/HIP (DTK)


class Kunlunxin(Vendor):
    name = "Kunlunxin"
    visible_env = ("XPU_VISIBLE_DEVICES",)  # XPU runtime (XRE)


class Iluvatar(Vendor):
    name = "Iluvatar CoreX"
    visible_env = ("CUDA_VISIBLE_DEVICES",)  # CoreX is CUDA-compatible


class Biren(Vendor):
    name = "Biren"
    # Not in Biren's public docs we could read; public deployment scripts for BR1xx (vLLM/SGLang containers) set
    # BIREN_VISIBLE_DEVICES, and torch_br reads SUPA_VISIBLE_DEVICES (the SUPA runtime): we set both.
    visible_env = ("BIREN_VISIBLE_DEVICES", "SUPA_VISIBLE_DEVICES")


class Unknown(Vendor):
    """A model the catalog does not know (an opaque name): no variable is set."""

    name = "unknown"
    visible_env = ()


VENDORS: tuple[type[Vendor], ...] = (Nvidia, Huawei, MooreThreads, MetaX, Cambricon, Hygon, Kunlunxin, Iluvatar, Biren)
_BY_NAME = {v.name.lower(): v for v in VENDORS}


def vendor_of(model: str) -> type[Vendor]:
    """The vendor class of an accelerator model (catalog key or alias); :class:`Unknown` if not in the catalog."""
    try:
        return _BY_NAME.get(accelerator(model).vendor.lower(), Unknown)
    except UnknownName:
        return Unknown


def visible_devices_env(model: str, local_indices: list[int]) -> dict[str, str]:
    """The environment that restricts a process to ``local_indices`` of devices of ``model``."""
    return vendor_of(model).env_for(local_indices)


def all_visible_env_vars() -> tuple[str, ...]:
    """Every visible-devices variable any vendor uses (the executor clears the ones a job should not inherit)."""
    return tuple(dict.fromkeys(v for c in VENDORS for v in c.visible_env))


_DECL_RE = re.compile(r"^\s*(\d+)\s*[xX×*]\s*([A-Za-z0-9._-]+)\s*$")


def parse_declared(text: str) -> list[LocalDevice]:
    """``8xBR100`` or ``4xH100,2x910B`` -> declared devices (one model per node: mixing is refused)."""
    out: list[LocalDevice] = []
    models: set[str] = set()
    for part in (p for p in text.split(",") if p.strip()):
        m = _DECL_RE.match(part)
        if not m:
            raise SpecError(f"--devices: {part.strip()!r} is not COUNTxMODEL (e.g. 8xBR100)")
        n = int(m.group(1))
        if not 1 <= n <= 1024:
            raise SpecError(f"--devices: {part.strip()!r}: count must be within 1..1024")
        key = resolve_accelerator(m.group(2))
        models.add(key)
        base = len(out)
        out.extend([LocalDevice(base + i, key, None, None, True) for i in range(n)])
    if not out:
        raise SpecError("--devices: nothing declared (e.g. 8xBR100)")
    if len(models) > 1:
        raise SpecError("--devices: one node holds one accelerator model; got " + ", ".join(sorted(models)))
    return out


def discover() -> list[LocalDevice]:
    """Devices this machine's drivers report (NVIDIA only for now); empty on a machine without any."""
    out: list[LocalDevice] = []
    for v in VENDORS:
        if out:
            break
        out = v.discover()
    return out


def host_cpu_memory() -> tuple[int, int]:
    """(CPU milli-cores, memory MiB) of this machine."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) // 1024
                    break
    except OSError:
        mem = 0
    return cpus * 1000, mem or 1024
