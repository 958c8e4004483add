"""Devices declared by hand: ``suanli up --devices 8xBR100`` and the Ray node label ``suanli.io/devices=8xBR100``.

Declared devices are not probed (nothing on the machine is asked): they are healthy unless a fault is injected
through :mod:`suanli.devices.faults`, and they are marked declared everywhere they are shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from suanli.catalog.accelerators import resolve_accelerator
from suanli.devices.base import DeviceHealth, LocalDevice, Vendor
from suanli.errors import SpecError

DEVICES_LABEL = "suanli.io/devices"
DOMAIN_LABEL = "suanli.io/domain"
RACK_LABEL = "suanli.io/rack"

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


def declared_from_labels(labels: Mapping[str, str]) -> list[LocalDevice] | None:
    """The devices a Ray node declares with the ``suanli.io/devices`` label; None when it has no such label
    (bad syntax raises :class:`SpecError` naming the label)."""
    text = labels.get(DEVICES_LABEL)
    if text is None:
        return None
    try:
        return parse_declared(text)
    except SpecError as e:
        raise SpecError(str(e).replace("--devices", f"label {DEVICES_LABEL}", 1)) from None


class Declared(Vendor):
    """Health of declared devices: not probed, healthy unless a fault is injected."""

    name = "declared"
    tool = "declaration"
    limitations = ("declared devices are not probed: only injected faults or node loss make them unhealthy",)

    @classmethod
    def discover(cls) -> list[LocalDevice]:
        return []

    @classmethod
    def probe(cls, local_indices: Sequence[int]) -> list[DeviceHealth]:
        return [DeviceHealth(i, True, "", {"probe": "declared"}) for i in local_indices]

    visible_env: ClassVar[tuple[str, ...]] = ()
