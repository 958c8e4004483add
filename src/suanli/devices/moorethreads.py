"""Moore Threads through ``mthreads-gmi`` (the MUSA driver's management tool).

The table prints per GPU a row ``ID  Name |PCIe bus |%GPU  used MiB(total MiB)``, then ``Device Type [Perf] |lane
width |Temp MPC``, then ``|ECC Mode``. No public health state exists in that table: a GPU the tool stops listing is
unhealthy; temperature and ECC mode are signals. (HAMi's Moore Threads path likewise treats listed devices as
healthy.)
"""

from __future__ import annotations

import re

from suanli.devices.base import CliVendor, DeviceHealth, LocalDevice, catalog_model

_ROW = re.compile(r"^(\d+)\s+(.+?)\s*\|\s*([0-9A-Fa-f:.]+)\s*\|\s*(\d+)%\s+(\d+)MiB\((\d+)MiB\)")
_TEMP = re.compile(r"\|\s*(\d+)C\b")


class MooreThreads(CliVendor):
    name = "Moore Threads"
    visible_env = ("MUSA_VISIBLE_DEVICES",)  # MUSA runtime (the container runtime's is MTHREADS_VISIBLE_DEVICES)
    tool = "mthreads-gmi"
    list_cmd = ("mthreads-gmi",)
    limitations = ("no public health state: a GPU is unhealthy only when mthreads-gmi stops listing it",)

    @classmethod
    def parse(cls, text: str) -> list[tuple[LocalDevice, DeviceHealth]]:
        out: list[tuple[LocalDevice, DeviceHealth]] = []
        lines = text.splitlines()
        for n, line in enumerate(lines):
            m = _ROW.match(line.strip())
            if not m:
                continue
            idx, name, bus = int(m.group(1)), m.group(2).strip(), m.group(3)
            sig: dict[str, str | int | float | bool] = {"util_pct": int(m.group(4))}
            t = _TEMP.search(lines[n + 1]) if n + 1 < len(lines) else None
            if t:
                sig["temperature_c"] = int(t.group(1))
            if n + 2 < len(lines) and "|" in lines[n + 2]:
                ecc = lines[n + 2].split("|")[-1].strip()
                if ecc:
                    sig["ecc_mode"] = ecc
            dev = LocalDevice(idx, catalog_model(name, name.replace("MTT", "").strip()), None, int(m.group(6)),
                              False, bus)
            out.append((dev, DeviceHealth(idx, True, "", sig)))
        return out
