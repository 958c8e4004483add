"""Kunlunxin XPU. Its management tool is ``xpu-smi``; we found no public record of its output format (vendor
documentation is behind a login; the public mentions are commands, not output), so nothing is parsed: declare the
devices (``suanli up --devices 8xR300`` or the ``suanli.io/devices`` Ray label). Health is then not probed."""

from __future__ import annotations

from suanli.devices.base import NoTool


class Kunlunxin(NoTool):
    name = "Kunlunxin"
    visible_env = ("XPU_VISIBLE_DEVICES",)  # XPU runtime (XRE); PaddlePaddle FastDeploy's Kunlunxin docs
    tool = "xpu-smi"
    limitations = ("no public sample of xpu-smi output: no discovery, no health probe (declare the devices)",)
