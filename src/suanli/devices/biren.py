"""Biren. Its management tool is ``brsmi`` (the BRML library; HAMi's biren-device-plugin mounts it from
/opt/birentech); we found no public record of its output format, so nothing is parsed: declare the devices
(``8xBR100``)."""

from __future__ import annotations

from suanli.devices.base import NoTool


class Biren(NoTool):
    name = "Biren"
    # Not in Biren's public docs we could read; public deployment scripts for BR1xx (vLLM/SGLang containers) set
    # BIREN_VISIBLE_DEVICES, and torch_br reads SUPA_VISIBLE_DEVICES (the SUPA runtime): we set both.
    visible_env = ("BIREN_VISIBLE_DEVICES", "SUPA_VISIBLE_DEVICES")
    tool = "brsmi"
    limitations = ("no public sample of brsmi output: no discovery, no health probe (declare the devices)",)
