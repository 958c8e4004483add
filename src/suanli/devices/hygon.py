"""Hygon DCU through ``hy-smi`` (DTK's management tool, a rename of ``rocm-smi`` that prints the same JSON keys):
``hy-smi --showproductname --showmeminfo vram --showtemp --json`` -> ``{"card0": {"Card Series": ...,
"vram Total Memory (MiB)": ..., "Unique ID": ..., "Temperature (Sensor junction) (C)": ...}}``.

No per-device health state is public (HAMi's DCU plugin only checks that /dev/kfd opens): a card hy-smi stops
listing is unhealthy; temperatures are signals.
"""

from __future__ import annotations

import json
import re

from suanli.devices.base import CliVendor, DeviceHealth, LocalDevice, catalog_model, to_float, to_int


class Hygon(CliVendor):
    name = "Hygon"
    visible_env = ("HIP_VISIBLE_DEVICES",)  # DCU runs ROCm/HIP (DTK)
    tool = "hy-smi"
    list_cmd = ("hy-smi", "--showproductname", "--showmeminfo", "vram", "--showtemp", "--json")
    limitations = ("no public health state: a card is unhealthy only when hy-smi stops listing it",)

    @classmethod
    def parse(cls, text: str) -> list[tuple[LocalDevice, DeviceHealth]]:
        data = json.loads(text[text.index("{"): text.rindex("}") + 1])
        out: list[tuple[LocalDevice, DeviceHealth]] = []
        for key, card in sorted(data.items()):
            m = re.fullmatch(r"card(\d+)", key)
            if not m or not isinstance(card, dict):
                continue
            idx = int(m.group(1))
            low = {k.lower(): v for k, v in card.items()}
            name = str(low.get("card series") or low.get("card model") or "DCU")
            mem = to_int(low.get("vram total memory (mib)"))
            if mem is None and low.get("vram total memory (b)") is not None:
                mem = (to_int(low.get("vram total memory (b)")) or 0) // (1024 * 1024) or None
            sig: dict[str, str | int | float | bool] = {}
            t = to_float(low.get("temperature (sensor junction) (c)"))
            if t is not None:
                sig["temperature_c"] = t
            uuid = low.get("unique id")
            dev = LocalDevice(idx, catalog_model(name, name.replace("DCU", "").strip()), str(uuid) if uuid else None,
                              mem, False, None)
            out.append((dev, DeviceHealth(idx, True, "", sig)))
        return out
