"""Iluvatar CoreX through ``ixsmi`` (nvidia-smi compatible queries):
``ixsmi --format=csv,noheader --query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu``.

No health field is queried (none is documented publicly for ixsmi): a GPU the tool stops listing is unhealthy.
"""

from __future__ import annotations

import csv

from suanli.devices.base import CliVendor, DeviceHealth, LocalDevice, catalog_model, to_int


class Iluvatar(CliVendor):
    name = "Iluvatar CoreX"
    visible_env = ("CUDA_VISIBLE_DEVICES",)  # CoreX is CUDA-compatible
    tool = "ixsmi"
    list_cmd = ("ixsmi", "--format=csv,noheader",
                "--query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu")
    limitations = ("no public health field: a GPU is unhealthy only when ixsmi stops listing it",
                   "no UUID or bus id is queried")

    @classmethod
    def parse(cls, text: str) -> list[tuple[LocalDevice, DeviceHealth]]:
        out: list[tuple[LocalDevice, DeviceHealth]] = []
        for row in csv.reader(text.splitlines()):
            if len(row) < 6 or to_int(row[0]) is None:
                continue
            idx = int(row[0])
            name = row[1].strip()
            short = name.replace("Iluvatar", "").strip()
            sig: dict[str, str | int | float | bool] = {}
            t = to_int(row[5])
            if t is not None:
                sig["temperature_c"] = t
            dev = LocalDevice(idx, catalog_model(name, short), None, to_int(row[2]), False, None)
            out.append((dev, DeviceHealth(idx, True, "", sig)))
        return out
