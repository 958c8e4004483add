"""Huawei Ascend through ``npu-smi info`` (the Ascend driver's management CLI).

The device table prints two rows per chip: ``| NPU  Name | Health | Power Temp Hugepages |`` then
``| Chip [Device] | Bus-Id | AICore Memory-Usage HBM-Usage |``. The local index the CANN runtime counts
(``ASCEND_RT_VISIBLE_DEVICES``) is the chip's logical device id: the second number of the chip row on cards with
several chips (Atlas 300I), the NPU id on one-chip cards (910 series), as ``npu-smi info -m`` maps them.

Health is the Ascend health code of the ``Health`` column: OK and Warning (a general alarm on a working chip) are
healthy; Alarm, Critical or anything else drains the chip, with the code as the reason.
"""

from __future__ import annotations

import re

from suanli.devices.base import CliVendor, DeviceHealth, LocalDevice, catalog_model, to_float, to_int

HEALTHY_CODES = frozenset({"OK", "WARNING"})

_ROW1 = re.compile(r"^\|\s*(\d+)\s+(\S.*?)\s*\|\s*(\w+)\s*\|(.*)\|\s*$")
_ROW2 = re.compile(r"^\|\s*(\d+)(?:\s+(\d+))?\s*\|\s*([0-9A-Fa-f]{4}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d)\s*\|(.*)\|\s*$")


def ascend_model(name: str) -> str:
    m = re.match(r"(?i)^(?:Ascend)?\s*(910[BC]?|310P?)", name.strip())
    return catalog_model(name, m.group(1).upper()) if m else catalog_model(name)


class Huawei(CliVendor):
    name = "Huawei"
    visible_env = ("ASCEND_RT_VISIBLE_DEVICES",)  # CANN runtime (vllm-ascend's device_control_env_var)
    tool = "npu-smi"
    list_cmd = ("npu-smi", "info")
    limitations = (
        "the chip's error codes (npu-smi info -t health) are not read: the Health column decides",
        "the device table has no UUID; chips are identified by logical id and bus id",
    )

    @classmethod
    def parse(cls, text: str) -> list[tuple[LocalDevice, DeviceHealth]]:
        out: list[tuple[LocalDevice, DeviceHealth]] = []
        head: tuple[int, str, str, str] | None = None
        for line in text.splitlines():
            if "Process id" in line:
                break
            m1 = _ROW1.match(line)
            if m1 and not _ROW2.match(line):
                head = (int(m1.group(1)), m1.group(2), m1.group(3), m1.group(4))
                continue
            m2 = _ROW2.match(line)
            if m2 and head is not None:
                npu, name, code, rest1 = head
                logical = int(m2.group(2)) if m2.group(2) is not None else npu
                usage = re.findall(r"(\d+)\s*/\s*(\d+)", m2.group(4))
                mem = None
                for _, total in reversed(usage):  # HBM-Usage when the chip has HBM, else Memory-Usage
                    if int(total) > 0:
                        mem = int(total)
                        break
                nums = rest1.split()
                sig: dict[str, str | int | float | bool] = {"health_code": code}
                if len(nums) >= 2:
                    p, t = to_float(nums[0]), to_int(nums[1])
                    if p is not None:
                        sig["power_w"] = p
                    if t is not None:
                        sig["temperature_c"] = t
                ok = code.upper() in HEALTHY_CODES
                dev = LocalDevice(logical, ascend_model(name), None, mem, False, m2.group(3))
                out.append((dev, DeviceHealth(logical, ok, "" if ok else f"Ascend health {code}", sig)))
        return out
