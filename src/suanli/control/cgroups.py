"""Every process of an attempt, including the ones that left its process group (``setsid``, daemons).

Two ways, both used when available:

- a cgroup v2 per attempt (``<the controller's cgroup>/suanli-<prefix>/<attempt key>``): membership is inherited
  by every descendant and cannot be left without privileges; ``cgroup.kill`` ends them all at once;
- a scan of ``/proc`` for ``SUANLI_ATTEMPT_KEY=<key>`` in the environment (every rank starts with it and children
  inherit it; a process that wipes its environment escapes this scan, not the cgroup).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger("suanli.cgroups")


def cgroup2_root() -> Path | None:
    """Where this process's cgroup v2 lives (``<mount>/<own path>``), or None (no cgroup v2 mounted, or not
    writable by us)."""
    mount = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split(" - ")
                if len(parts) == 2 and parts[1].split()[0] == "cgroup2":
                    mount = line.split()[4]
                    break
        own = ""
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    own = line.strip()[3:]
    except OSError:
        return None
    if mount is None:
        return None
    root = Path(mount) / own.lstrip("/")
    return root if os.access(root, os.W_OK) else None


class AttemptCgroups:
    """One cgroup per attempt under ``<root>/suanli-<prefix>``. ``enabled`` is False where cgroup v2 is missing
    or not writable (the ``/proc`` scan alone then)."""

    def __init__(self, prefix: str, root: Path | bool | None = True) -> None:
        base = cgroup2_root() if root is True else (root or None)
        # created with the first attempt and removed with the last (an idle executor leaves nothing behind)
        self.base: Path | None = None if base is None else Path(base) / f"suanli-{prefix.rstrip('-')}"

    @property
    def enabled(self) -> bool:
        return self.base is not None

    def path(self, key: str) -> Path | None:
        return None if self.base is None else self.base / key

    def create(self, key: str) -> Path | None:
        p = self.path(key)
        if p is None:
            return None
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            log.warning("cannot create cgroup %s (%s): processes that leave their group are found by their "
                        "environment only", p, e)
            return None
        return p

    @staticmethod
    def add(cg: Path, pid: int) -> bool:
        try:
            (cg / "cgroup.procs").write_text(f"{pid}\n")
            return True
        except OSError as e:
            log.warning("cannot move pid %d into %s: %s", pid, cg, e)
            return False

    def procs(self, key: str) -> list[int]:
        p = self.path(key)
        if p is None:
            return []
        try:
            return [int(x) for x in (p / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self, key: str) -> None:
        """SIGKILL everything in the attempt's cgroup (``cgroup.kill``, or each member)."""
        p = self.path(key)
        if p is None or not p.exists():
            return
        try:
            (p / "cgroup.kill").write_text("1\n")
            return
        except OSError:
            pass
        for pid in self.procs(key):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Remove the (empty) directory of this executor's attempts."""
        if self.base is not None:
            with contextlib.suppress(OSError):
                self.base.rmdir()

    def remove(self, key: str) -> bool:
        """Remove the attempt's (empty) cgroup; False while processes remain."""
        p = self.path(key)
        if p is None or not p.exists():
            return True
        try:
            p.rmdir()
        except OSError:
            return False
        self.close()  # the base too, once no attempt is left in it
        return True


def env_scan(key: str) -> list[int]:
    """Live processes whose environment holds exactly ``SUANLI_ATTEMPT_KEY=<key>``."""
    needle = f"SUANLI_ATTEMPT_KEY={key}\0".encode()
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read() + b"\0"
        except OSError:
            continue
        if env.startswith(needle) or (b"\0" + needle) in env:
            out.append(int(d))
    return out


def attempt_pids(cgroups: AttemptCgroups | None, key: str) -> set[int]:
    pids = set(env_scan(key))
    if cgroups is not None:
        pids.update(cgroups.procs(key))
    pids.discard(os.getpid())
    return pids


def signal_attempt(cgroups: AttemptCgroups | None, key: str, sig: int) -> int:
    """Send ``sig`` to every process of the attempt; how many were signalled."""
    n = 0
    if sig == signal.SIGKILL and cgroups is not None:
        cgroups.kill(key)
    for pid in attempt_pids(cgroups, key):
        try:
            os.kill(pid, sig)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    return n


def kill_attempt(cgroups: AttemptCgroups | None, key: str, timeout: float = 5.0) -> bool:
    """SIGKILL every process of the attempt until none is left (or ``timeout``); removes its cgroup. True when
    nothing is left."""
    end = time.monotonic() + timeout
    while True:
        signal_attempt(cgroups, key, signal.SIGKILL)
        left = [p for p in attempt_pids(cgroups, key) if _live(p)]
        if not left:
            if cgroups is not None:
                cgroups.remove(key)
            return True
        if time.monotonic() >= end:
            log.warning("attempt %s: %d processes survive SIGKILL: %s", key, len(left), left[:10])
            return False
        time.sleep(0.02)


def _live(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    rest = data[data.rfind(b")") + 2 :].split()
    return bool(rest) and rest[0] not in (b"Z", b"X")
