"""MetaX through ``mx-smi -L`` (the MetaX driver's SMI): one line per GPU,
``GPU#0  MXC500  0000:08:00.0  Available (UUID: GPU-...)``.

Health is the state mx-smi prints: ``Available`` is healthy; anything else (``Not Available(MetaX Sysfs File
Unaccessible)``...) drains the GPU with that text as the reason, as MetaX's own day-2 check does.
"""

from __future__ import annotations

import re

from suanli.devices.base import CliVendor, DeviceHealth, LocalDevice, catalog_model

_LINE = re.compile(r"^GPU#(\d+)\s+(\S+)\s+([0-9A-Fa-f:.]+)\s+(.*?)\s*(?:\(UUID:\s*([^)]+)\))?\s*$")


class MetaX(CliVendor):
    name = "MetaX"
    # MACA is CUDA-compatible: Ray's MetaxGPUAcceleratorManager uses CUDA_VISIBLE_DEVICES for MetaX GPUs.
    visible_env = ("CUDA_VISIBLE_DEVICES",)
    tool = "mx-smi"
    list_cmd = ("mx-smi", "-L")
    limitations = ("memory size is not in `mx-smi -L`; the catalog's figure applies",)

    @classmethod
    def parse(cls, text: str) -> list[tuple[LocalDevice, DeviceHealth]]:
        out: list[tuple[LocalDevice, DeviceHealth]] = []
        for line in text.splitlines():
            m = _LINE.match(line.strip())
            if not m:
                continue
            idx, name, bus, state, uuid = int(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5)
            ok = state == "Available"
            dev = LocalDevice(idx, catalog_model(name, re.sub(r"^MX", "", name)), uuid, None, False, bus)
            out.append((dev, DeviceHealth(idx, ok, "" if ok else f"mx-smi: {state}", {"state": state})))
        return out
