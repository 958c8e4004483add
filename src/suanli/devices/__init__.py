"""Accelerator vendors as the executor and the node agents see them: discovery, health, visible-devices variables.

One module per vendor (``nvidia``, ``huawei``, ``moorethreads``, ``metax``, ``cambricon``, ``hygon``,
``kunlunxin``, ``iluvatar``, ``enflame``, ``biren``), each a subclass of :class:`~suanli.devices.base.Vendor`
with ``discover()``, ``health(local_indices, node=...)``, ``visible_env`` and ``limitations`` (what it cannot do and
why). Devices declared by hand (``suanli up --devices 8xBR100``, the Ray node label ``suanli.io/devices``) are in
:mod:`~suanli.devices.declared`; they are marked declared everywhere they are shown.

The API other code uses:

- ``discover() -> list[LocalDevice]``: every device every vendor finds on this machine (all vendors, not the first
  that answers); ``discover_by_vendor()`` keeps them apart (local indices restart at 0 for each vendor).
- ``health(devices, *, node=None) -> list[DeviceHealth]``: one entry per device, in order, each with ``healthy``,
  a one-line ``reason`` and the ``signals`` read. Declared devices are not probed. This is what a controller step
  calls to drain devices (``DeviceHealth.healthy`` False -> mark the device down with ``reason``).
- ``vendor_of(model)``, ``visible_devices_env(model, indices)``, ``all_visible_env_vars()``,
  ``parse_declared(text)``, ``declared_from_labels(labels)``, ``host_cpu_memory()``, ``nvidia_model(name)``.
- Test seam: :mod:`suanli.devices.faults` (``SUANLI_DEVICE_FAULTS`` / ``SUANLI_DEVICE_FAULTS_FILE``,
  ``set_fault(path, node, index, reason)``) marks device ``i`` of a node unhealthy through the vendor classes.

Where a vendor's tool output is parsed, ``tests/data/devices/`` holds a recorded sample of it (sources listed there);
where no public output exists (Kunlunxin ``xpu-smi``, Enflame ``efsmi``, Biren ``brsmi``) the module says so and
discovers nothing. ``docs/control.md`` lists the visible-devices variables and their evidence.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from suanli.catalog.accelerators import accelerator
from suanli.devices.base import DeviceHealth, LocalDevice, NoTool, Vendor, run_tool
from suanli.devices.biren import Biren
from suanli.devices.cambricon import Cambricon
from suanli.devices.declared import (
    DEVICES_LABEL,
    DOMAIN_LABEL,
    RACK_LABEL,
    Declared,
    declared_from_labels,
    parse_declared,
)
from suanli.devices.enflame import Enflame
from suanli.devices.faults import FAULTS_ENV, FAULTS_FILE_ENV, injected_faults, set_fault
from suanli.devices.huawei import Huawei
from suanli.devices.hygon import Hygon
from suanli.devices.iluvatar import Iluvatar
from suanli.devices.kunlunxin import Kunlunxin
from suanli.devices.metax import MetaX
from suanli.devices.moorethreads import MooreThreads
from suanli.devices.nvidia import Nvidia, nvidia_model
from suanli.errors import UnknownName

__all__ = [
    "DEVICES_LABEL", "DOMAIN_LABEL", "FAULTS_ENV", "FAULTS_FILE_ENV", "RACK_LABEL", "VENDORS", "Biren", "Cambricon",
    "Declared", "DeviceHealth", "Enflame", "Huawei", "Hygon", "Iluvatar", "Kunlunxin", "LocalDevice", "MetaX",
    "MooreThreads", "NoTool", "Nvidia", "Unknown", "Vendor", "all_visible_env_vars", "declared_from_labels",
    "discover", "discover_by_vendor", "health", "host_cpu_memory", "injected_faults", "nvidia_model",
    "parse_declared", "run_tool", "set_fault", "vendor_of", "visible_devices_env",
]


class Unknown(NoTool):
    """A model the catalog does not know (an opaque name): no variable is set, nothing is probed."""

    name = "unknown"
    visible_env = ()
    limitations = ("the catalog does not know the model: no visible-devices variable is set",)


VENDORS: tuple[type[Vendor], ...] = (Nvidia, Huawei, MooreThreads, MetaX, Cambricon, Hygon, Kunlunxin, Iluvatar,
                                     Enflame, Biren)
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


def discover_by_vendor() -> dict[str, list[LocalDevice]]:
    """Vendor name -> the devices that vendor's module finds here (vendors finding nothing are left out)."""
    out: dict[str, list[LocalDevice]] = {}
    for v in VENDORS:
        ds = v.discover()
        if ds:
            out[v.name] = ds
    return out


def discover() -> list[LocalDevice]:
    """Every device every vendor's module finds on this machine, vendor by vendor; empty on a machine without any.

    A machine with two vendors' devices returns both (their local indices each start at 0: group by model, or use
    :func:`discover_by_vendor`, before registering them as one-model nodes)."""
    return [d for ds in discover_by_vendor().values() for d in ds]


def health(devices: Sequence[LocalDevice], *, node: str | None = None) -> list[DeviceHealth]:
    """One :class:`DeviceHealth` per device of ``devices``, in order: each vendor's probe for discovered devices,
    no probe for declared ones, injected faults (``node``'s and ``*``) applied to all."""
    groups: dict[type[Vendor], list[int]] = {}
    for d in devices:
        groups.setdefault(_prober(d), []).append(d.index)
    by: dict[tuple[type[Vendor], int], DeviceHealth] = {}
    for cls, idx in groups.items():
        for h in cls.health(idx, node=node):
            by[(cls, h.index)] = h
    return [by[(_prober(d), d.index)] for d in devices]


def _prober(d: LocalDevice) -> type[Vendor]:
    if d.declared:
        return Declared
    return _BY_NAME.get(d.vendor.lower()) or vendor_of(d.model)


def energy_mj(model: str, local_indices: Sequence[int]) -> list[float | None]:
    """The cumulative energy counters (mJ) of ``model`` devices at ``local_indices``, None where not readable."""
    try:
        return vendor_of(model).energy_mj(local_indices)
    except Exception:  # an unknown model, or a library that fails: not measured
        return [None for _ in local_indices]


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
