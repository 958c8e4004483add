"""What every vendor module provides: discovery, health, the visible-devices variable(s), and what it cannot do.

A vendor is a class (never instantiated: the methods are class methods, so ``vendor_of(model).env_for(...)`` works
on the class the catalog names). Vendors whose management tool prints text get it through :func:`run_tool`, one
seam that tests replace with recorded samples of the tool's real output (``tests/data/devices/``).
"""

from __future__ import annotations

import re
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

from suanli.catalog.accelerators import resolve_accelerator
from suanli.errors import UnknownName

TOOL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LocalDevice:
    """One accelerator of this machine."""

    index: int  # local index, as the vendor's visible-devices variable counts
    model: str  # catalog key, or the name the driver reports when the catalog does not know it
    uuid: str | None = None
    memory_mib: int | None = None
    declared: bool = False  # declared by hand (not discovered)
    bus_id: str | None = None  # PCI bus id where the tool reports it
    vendor: str = ""  # the vendor module that found it ("" when declared: the catalog's vendor of the model)


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """One device's health at one moment: ``healthy`` is what the controller acts on (False drains the device);
    ``reason`` says why in one line (empty when healthy); ``signals`` holds what the probe read (temperature, ECC
    counts, NVLink state...) for display, never for decisions."""

    index: int
    healthy: bool
    reason: str = ""
    signals: dict[str, str | int | float | bool] = field(default_factory=dict)


def run_tool(argv: Sequence[str], timeout_s: float = TOOL_TIMEOUT_S) -> str | None:
    """stdout of a vendor tool; None when the tool is missing, fails or hangs (never an exception).

    The one place vendor modules run a process: tests replace this function (``monkeypatch.setattr(base,
    "run_tool", ...)``) with one that returns recorded output."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0 or not p.stdout.strip():
        return None
    return p.stdout


def catalog_model(name: str, *candidates: str) -> str:
    """The catalog key for a device name a tool printed (trying ``candidates`` first, then each token of the
    name); the name itself when the catalog does not know it."""
    tries = [*candidates, name, *re.split(r"[\s_/]+", name)]
    for t in tries:
        t = t.strip()
        if not t:
            continue
        try:
            return resolve_accelerator(t)
        except UnknownName:
            continue
    return name.strip()


class Vendor(ABC):
    """A vendor: its name in the catalog, its visible-devices variable(s), discovery and health.

    ``discover()`` lists this machine's devices of the vendor (empty, never an error, without the driver or
    tool). ``health(local_indices, node=...)`` returns one :class:`DeviceHealth` per asked index, in order: a
    device the probe cannot see is unhealthy ("not reported by <tool>"); faults injected through
    :mod:`suanli.devices.faults` override the probe (the test seam). ``limitations`` says what the module cannot do
    and why, shown by ``suanli`` where a user asks why a signal is missing."""

    name: ClassVar[str] = ""
    visible_env: ClassVar[tuple[str, ...]] = ()
    tool: ClassVar[str] = ""  # the management CLI or library the module reads
    limitations: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def env_for(cls, local_indices: Iterable[int]) -> dict[str, str]:
        v = ",".join(str(i) for i in local_indices)
        return dict.fromkeys(cls.visible_env, v)

    @classmethod
    @abstractmethod
    def discover(cls) -> list[LocalDevice]:
        """This machine's devices of this vendor; empty without the driver or tool."""

    @classmethod
    @abstractmethod
    def probe(cls, local_indices: Sequence[int]) -> list[DeviceHealth]:
        """Health as the vendor's tool or library reports it, one entry per index (no injected faults)."""

    @classmethod
    def energy_mj(cls, local_indices: Sequence[int]) -> list[float | None]:
        """Each device's cumulative board energy counter (millijoules since the driver loaded), None where the vendor
        library cannot read it (accounting measures an attempt's energy as the difference at its end)."""
        return [None for _ in local_indices]

    @classmethod
    def health(cls, local_indices: Sequence[int], *, node: str | None = None) -> list[DeviceHealth]:
        """Per-device health of ``local_indices`` (in order), injected faults applied."""
        from suanli.devices.faults import apply_faults

        idx = list(local_indices)
        try:
            probed = cls.probe(idx)
        except Exception as e:  # a probe never takes the agent down; it says the device could not be read
            probed = [DeviceHealth(i, False, f"{cls.tool or cls.name} probe failed: {type(e).__name__}: {e}")
                      for i in idx]
        return apply_faults(probed, node)


class CliVendor(Vendor):
    """A vendor read through one management CLI: ``list_cmd`` is run once per discovery and per health probe;
    ``parse(text)`` turns its output into devices and per-device health (healthy, reason, signals)."""

    list_cmd: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def parse(cls, text: str) -> list[tuple[LocalDevice, DeviceHealth]]:
        """Devices and their health from one output of ``list_cmd``."""

    @classmethod
    def _read(cls) -> list[tuple[LocalDevice, DeviceHealth]] | None:
        out = run_tool(cls.list_cmd)
        if out is None:
            return None
        try:
            rows = cls.parse(out)
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        return [(replace(d, vendor=cls.name), h) for d, h in rows]

    @classmethod
    def discover(cls) -> list[LocalDevice]:
        rows = cls._read()
        return [d for d, _ in rows] if rows else []

    @classmethod
    def probe(cls, local_indices: Sequence[int]) -> list[DeviceHealth]:
        rows = cls._read()
        if rows is None:
            return [DeviceHealth(i, False, f"{cls.tool} did not answer") for i in local_indices]
        by = {d.index: h for d, h in rows}
        return [by.get(i) or DeviceHealth(i, False, f"not reported by {cls.tool}") for i in local_indices]


class NoTool(Vendor):
    """A vendor whose tool output we found no public record of: nothing is discovered (declare the devices with
    ``--devices`` or the ``suanli.io/devices`` Ray label) and the probe has nothing to read (healthy unless a fault
    is injected)."""

    @classmethod
    def discover(cls) -> list[LocalDevice]:
        return []

    @classmethod
    def probe(cls, local_indices: Sequence[int]) -> list[DeviceHealth]:
        return [DeviceHealth(i, True, "", {"probe": "none"}) for i in local_indices]


_INT = re.compile(r"-?\d+")


def to_int(s: str | None) -> int | None:
    """First integer in ``s`` ('23374 MiB' -> 23374); None for 'N/A' and the like."""
    if s is None:
        return None
    m = _INT.search(str(s))
    return int(m.group()) if m else None


def to_float(s: str | None) -> float | None:
    if s is None:
        return None
    m = re.search(r"-?\d+(?:\.\d+)?", str(s))
    return float(m.group()) if m else None
