"""Cambricon MLU through ``cnmon`` (the Cambricon driver's monitor).

The card table prints two rows per card: ``| Card VF Name Firmware | Bus-Id | Util Ecc-Error |`` then
``| Fan Temp Pwr:Usage/Cap | Memory-Usage | SR-IOV Compute-Mode |``. A card cnmon no longer lists is unhealthy.
The ``Ecc-Error`` column is reported as a signal only: whether it counts corrected errors is not in Cambricon's
public documentation, so it does not drain a card (no public health code exists; HAMi's Cambricon path treats a
card as healthy whenever the plugin reports it).
"""

from __future__ import annotations

import re

from suanli.devices.base import CliVendor, DeviceHealth, LocalDevice, catalog_model, to_int

_ROW1 = re.compile(r"^\|\s*(\d+)\s+(\S+)\s+(\S+)\s+\S+\s*\|\s*([0-9A-Fa-f:.]+)?\s*\|\s*(\S+)\s+(\S+)\s*\|\s*$")
_ROW2 = re.compile(r"^\|\s*\S+\s+(\d+)C\s+.*\|\s*(\d+)\s*MiB\s*/\s*(\d+)\s*MiB\s*\|")


class Cambricon(CliVendor):
    name = "Cambricon"
    visible_env = ("MLU_VISIBLE_DEVICES",)  # CNRT / torch_mlu
    tool = "cnmon"
    list_cmd = ("cnmon",)
    limitations = ("no public health code: a card is unhealthy only when cnmon stops listing it",
                   "Ecc-Error is shown, not acted on (its meaning is not publicly documented)")

    @classmethod
    def parse(cls, text: str) -> list[tuple[LocalDevice, DeviceHealth]]:
        out: list[tuple[LocalDevice, DeviceHealth]] = []
        lines = text.splitlines()
        for n, line in enumerate(lines):
            m = _ROW1.match(line)
            if not m:
                continue
            idx, name, bus, ecc = int(m.group(1)), m.group(3), m.group(4), m.group(6)
            mem, sig = None, {"ecc_error": ecc}
            m2 = _ROW2.match(lines[n + 1]) if n + 1 < len(lines) else None
            if m2:
                sig["temperature_c"] = int(m2.group(1))
                mem = int(m2.group(3))
            if to_int(ecc) is not None:
                sig["ecc_error"] = to_int(ecc) or 0
            dev = LocalDevice(idx, catalog_model(name), None, mem, False, bus)
            out.append((dev, DeviceHealth(idx, True, "", sig)))
        return out
