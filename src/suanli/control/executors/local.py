"""The local executor: runs a job's command as real processes on this machine.

One process per device (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``, torchrun style;
every rank sees all the job's devices through the vendor's visible-devices variable and picks its own with
``LOCAL_RANK``), one process for a CPU-only or fractional job. All ranks of an attempt share one process group,
which is what cancel and preemption kill.

Each rank runs under a tiny ``/bin/sh`` wrapper that writes the command's exit status to a file when it ends, so
an attempt that finishes while the controller is down still has its exit code when the controller comes back.
Each process carries ``SUANLI_ATTEMPT_KEY`` in its environment: after a crash, the controller finds every process
of an attempt by it even if it died before recording their pids.

Stopping (cancel, preemption, shutdown) sends SIGTERM to the whole process group: the command itself gets it, and
the wrapper (which traps it) waits for the command and records its real exit status. SIGKILL follows after the
job's ``termination_grace`` (default: the executor's ``grace_s``). When the attempt ends, every process left of it
is killed, also the ones that left the group (``setsid``, daemons): they are found in the attempt's cgroup (cgroup
v2, where the controller may create one) and by their attempt key (:mod:`suanli.control.cgroups`).

Isolation (:mod:`suanli.control.isolation`): when the controller is root, ranks run as their tenant's OS user, with
a minimal environment (not the controller's), in directories only that user can read; logs are written by the
controller into a directory the job cannot write (no link a job plants is followed). Logs are capped and rotated
per ``log_policy`` (:mod:`suanli.control.logs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suanli.control import cgroups as cg
from suanli.control import isolation as iso
from suanli.control.executors.base import (
    Adoption,
    AdoptVerdict,
    AttemptRecord,
    AttemptSpec,
    DeviceInfo,
    Executor,
    Handle,
    NodeInfo,
    RankPlan,
    rank_env,
    termination_grace,
)
from suanli.control.logs import LogPolicy, rotate_if_needed
from suanli.control.types import DeviceHealth, StopReason
from suanli.devices import all_visible_env_vars, visible_devices_env

#: a health probe: the node's devices -> {local index: (healthy, reason)} for the devices it has news of
HealthProbe = Callable[[tuple[DeviceInfo, ...]], dict[int, tuple[bool, str | None]]]

# stdin: the start gate (the controller closes it once the rank is in its cgroup: nothing forks before that);
# a trapped SIGTERM does not end the wrapper (the command, in the same group, gets it and may take its grace
# period; the wrapper records its exit status); handlers are reset by exec, so the command sees SIGTERM normally.
_WRAPPER = (
    "read -r _; exec </dev/null; trap : TERM INT HUP; "
    '"$@"; rc=$?; printf "%s\\n" "$rc" > "$SUANLI_EXIT_FILE.tmp" && mv -f "$SUANLI_EXIT_FILE.tmp" "$SUANLI_EXIT_FILE";'
    " exit $rc"
)
#: the environment a job that runs as another OS user starts from (not the controller's, which may hold secrets)
_KEEP_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH", "CUDA_HOME", "ROCM_PATH")


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks since boot) or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    if not rest or rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def scan_attempt_pids(prefix: str) -> dict[str, list[int]]:
    """Processes whose environment holds ``SUANLI_ATTEMPT_KEY=<prefix>...``: attempt key -> pids."""
    needle = b"SUANLI_ATTEMPT_KEY=" + prefix.encode()
    out: dict[str, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        i = env.find(needle)
        if i < 0:
            continue
        j = env.find(b"\0", i)
        key = env[i + len(b"SUANLI_ATTEMPT_KEY=") : j if j >= 0 else None].decode()
        if proc_start_ticks(int(d)) is not None:
            out.setdefault(key, []).append(int(d))
    return out


def proc_rank(pid: int) -> int | None:
    """The ``RANK`` a process was started with (its environment), or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return None
    for item in env.split(b"\0"):
        if item.startswith(b"RANK="):
            try:
                return int(item[5:])
            except ValueError:
                return None
    return None


def newest_mtime(d: Path) -> float | None:
    """Modification time of the newest file under ``d`` (None: nothing there)."""
    best: float | None = None
    try:
        for root, _dirs, files in os.walk(d):
            for f in files:
                with contextlib.suppress(OSError):
                    t = os.stat(os.path.join(root, f)).st_mtime
                    best = t if best is None or t > best else best
    except OSError:
        return None
    return best


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalHandle(Handle):
    """A local attempt: its process group and its ranks' processes."""

    pgid: int = 0
    procs: list[tuple[int, int]] = field(default_factory=list)  # (pid, start ticks) per rank
    exit_files: list[Path] = field(default_factory=list)
    popens: list[subprocess.Popen[bytes]] | None = None  # None when adopted after a restart
    extra: list[tuple[int, int]] = field(default_factory=list)  # other live members found by the scan (adopted)
    ranks: list[int] = field(default_factory=list)  # the (global) rank of each process, in order

    def record(self) -> tuple[list[Any], int | None]:
        return [list(p) for p in self.procs], self.pgid


class LocalExecutor(Executor):
    """Processes on this machine (one node). ``health_probe`` (optional) reports device health."""

    def __init__(self, data_dir: str | Path, *, node: NodeInfo | None = None, grace_s: float = 5.0,
                 health_probe: HealthProbe | None = None, checkpoint_root: str | Path | None = None,
                 users: iso.JobUsers | None = None, log_policy: LogPolicy | None = None, cgroups: bool = True) -> None:
        self.root = Path(data_dir).resolve()
        self.checkpoint_root = Path(checkpoint_root).resolve() if checkpoint_root else None
        self.grace_s = grace_s
        self.key_prefix = hashlib.sha256(str(self.root).encode()).hexdigest()[:12] + "-"
        self.node = node
        self.health_probe = health_probe
        self.users = users or iso.JobUsers("shared")
        self.log_policy = log_policy or LogPolicy()
        self.cgroups = cg.AttemptCgroups(self.key_prefix) if cgroups else None

    # -- membership ----------------------------------------------------------------------------------------
    def nodes(self) -> list[NodeInfo]:
        if self.node is None:
            return []
        if self.health_probe is not None:
            news = self.health_probe(self.node.devices)
            if news:
                devs = tuple(d if d.index not in news else DeviceInfo(
                    d.index, d.model, d.uuid, d.memory_mib, d.declared,
                    DeviceHealth.HEALTHY if news[d.index][0] else DeviceHealth.UNHEALTHY,
                    None if news[d.index][0] else news[d.index][1]) for d in self.node.devices)
                return [dataclasses.replace(self.node, devices=devs)]  # the rest as given (partitions...)
        return [self.node]

    # -- paths ---------------------------------------------------------------------------------------------
    def job_dir(self, job_id: int) -> Path:
        return self.root / "jobs" / str(job_id)

    def log_path(self, job_id: int, n: int, rank: int = 0) -> Path:
        return self.job_dir(job_id) / "logs" / f"attempt-{n}.rank-{rank}.log"

    def attempt_key(self, attempt_id: int) -> str:
        return f"{self.key_prefix}{attempt_id}"

    # -- start ---------------------------------------------------------------------------------------------
    def start(self, a: AttemptSpec) -> LocalHandle:
        """Start every rank of ``a`` here (its placement must be on this one node)."""
        if len(a.nodes) > 1:
            raise ValueError(f"the local executor runs on one node; the placement spans {len(a.nodes)}")
        ranks = a.ranks()
        return self.start_ranks(a, ranks, len(ranks), "127.0.0.1", _free_port())

    def checkpoint_dir(self, job_id: int) -> Path:
        """``<checkpoint root>/<job id>`` when a checkpoint root is set (shared by every node), else the job's
        directory's ``checkpoint``."""
        if self.checkpoint_root is not None:
            return self.checkpoint_root / str(job_id)
        return self.job_dir(job_id) / "checkpoint"

    def energy_mj(self, node: str, model: str, local_indices: Sequence[int]) -> list[float | None]:
        """This machine's counters through suanli.devices (NVML energy; None for declared devices)."""
        if self.node is None or node != self.node.name or not model or any(d.declared for d in self.node.devices):
            return [None for _ in local_indices]
        from suanli.devices import energy_mj

        return energy_mj(model, local_indices)

    def last_checkpoint(self, job_id: int) -> float | None:
        return newest_mtime(self.checkpoint_dir(job_id))

    def start_ranks(self, a: AttemptSpec, ranks: list[RankPlan], world: int, master_addr: str, master_port: int
                    ) -> LocalHandle:
        """Start ``ranks`` (all of ``a``'s, or one node's share of a multi-node attempt) as one process group, as the
        tenant's OS user (:mod:`suanli.control.isolation`)."""
        user = self.users.for_tenant(str(a.spec.get("tenant", "default")))
        dirs = iso.prepare_job_dirs(self.job_dir(a.job_id), a.n, user, self.checkpoint_dir(a.job_id))
        if user.switches:
            base = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith("LC_")}
            base.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
            base.update({"HOME": str(dirs.work), "USER": user.name, "LOGNAME": user.name})
        else:
            base = {k: v for k, v in os.environ.items() if k not in all_visible_env_vars()}
        base.update(a.spec.get("env") or {})
        key = self.attempt_key(a.attempt_id)
        base["SUANLI_ATTEMPT_KEY"] = key
        command = list(a.spec.get("command") or [])
        cgroup = self.cgroups.create(key) if self.cgroups is not None else None
        popens: list[subprocess.Popen[bytes]] = []
        exit_files: list[Path] = []
        pgid = 0
        try:
            for r in ranks:
                env = dict(base, **rank_env(a, r, world, master_addr, master_port, str(dirs.checkpoint),
                                            str(dirs.work)))
                if r.devices:
                    env.update(visible_devices_env(a.model, list(r.devices)))
                ef = dirs.attempt / f"rank-{r.rank}.exit"
                ef.unlink(missing_ok=True)
                env["SUANLI_EXIT_FILE"] = str(ef)
                log_fd = iso.open_log(self.log_path(a.job_id, a.n, r.rank))
                gate_r, gate_w = os.pipe()
                try:
                    p = subprocess.Popen(
                        ["/bin/sh", "-c", _WRAPPER, "suanli-rank", *command], cwd=dirs.work, env=env,
                        stdin=gate_r, stdout=log_fd, stderr=subprocess.STDOUT,
                        process_group=pgid, **iso.spawn_kwargs(user),
                    )
                finally:
                    os.close(log_fd)
                    os.close(gate_r)
                if cgroup is not None:
                    cg.AttemptCgroups.add(cgroup, p.pid)
                os.close(gate_w)  # the wrapper goes on (EOF)
                if not pgid:
                    pgid = p.pid
                popens.append(p)
                exit_files.append(ef)
        except Exception:
            if pgid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
            for p in popens:
                p.wait()
            cg.kill_attempt(self.cgroups, key, timeout=2.0)
            raise
        procs = [(p.pid, proc_start_ticks(p.pid) or 0) for p in popens]
        return LocalHandle(a.job_id, a.attempt_id, a.n, pgid=pgid, procs=procs, exit_files=exit_files,
                           popens=popens, ranks=[r.rank for r in ranks], grace_s=termination_grace(a.spec))

    # -- adopt after a restart -----------------------------------------------------------------------------
    def adopt(self, records: list[AttemptRecord]) -> dict[int, Adoption]:
        """Re-attach to attempts an earlier controller process started: by their recorded pids (with start
        times) and by a ``/proc`` scan for their attempt key (which covers a crash between spawning and
        recording the pids). The exit files tell ranks that ended while nobody watched."""
        return self.adopt_ranks([(rec, list(range(rec.world))) for rec in records])

    def adopt_ranks(self, records: list[tuple[AttemptRecord, list[int]]]) -> dict[int, Adoption]:
        """:meth:`adopt` for the given ranks of each attempt (one node's share of a multi-node attempt)."""
        found = scan_attempt_pids(self.key_prefix) if records else {}
        out: dict[int, Adoption] = {}
        for rec, want in records:
            h = self._rebuild(rec, found.get(self.attempt_key(rec.attempt_id), []), want)
            alive = any(self._alive(p, t) for p, t in (*h.procs, *h.extra))
            if rec.procs is None:
                # The controller died between recording the attempt and recording its pids: some, all or none
                # of the ranks were spawned. All of them (alive, or ended with an exit file): adopt. None: not
                # started. Some: the attempt cannot work without the others; stop what exists.
                ranks = {r for r in (proc_rank(p) for p, _ in h.extra) if r is not None}
                ranks |= {r for r, f in zip(want, h.exit_files, strict=True) if f.exists()}
                if not set(want) <= ranks:
                    if alive:
                        self.kill(h)
                        self.wait(h, 5.0)
                    out[rec.attempt_id] = Adoption(AdoptVerdict.PARTIAL if ranks else AdoptVerdict.NOT_STARTED,
                                                   None, False, len(ranks & set(want)), len(want))
                    continue
            out[rec.attempt_id] = Adoption(AdoptVerdict.ADOPTED, h, alive, len(want), len(want))
        return out

    def _rebuild(self, rec: AttemptRecord, found: list[int], ranks: list[int]) -> LocalHandle:
        att = self.job_dir(rec.job_id) / "attempts" / str(rec.n)
        exit_files = [att / f"rank-{r}.exit" for r in ranks]
        ps: list[tuple[int, int]] = [(int(p), int(t)) for p, t in (rec.procs or [])]
        known = {p for p, _ in ps}
        extra: list[tuple[int, int]] = []
        for pid in found:  # the ranks' children, or ranks whose pids were never recorded
            if pid not in known:
                t = proc_start_ticks(pid)
                if t is not None:
                    extra.append((pid, t))
        pgid = rec.pgid
        if not pgid and (ps or extra):
            with contextlib.suppress(OSError):
                pgid = os.getpgid((ps or extra)[0][0])
        return LocalHandle(rec.job_id, rec.attempt_id, rec.n, pgid=pgid or 0, procs=ps, exit_files=exit_files,
                           popens=None, extra=extra, ranks=list(ranks), grace_s=termination_grace(rec.spec))

    # -- observe -------------------------------------------------------------------------------------------
    @staticmethod
    def _alive(pid: int, ticks: int) -> bool:
        t = proc_start_ticks(pid)
        return t is not None and (ticks == 0 or t == ticks)

    def poll(self, h: Handle) -> tuple[bool, int | None]:
        """(finished, exit code). A failing rank ends the attempt: the others are killed (torchrun does the same).
        The code is the first non-zero rank's (negative: killed by that signal), or None when nobody knows it
        (processes gone without an exit file)."""
        assert isinstance(h, LocalHandle)
        now = time.monotonic()
        if h.popens is not None:
            running = False
            for r, p in zip(h.ranks, h.popens, strict=True):
                if r in h.codes:
                    continue
                rc = p.poll()
                if rc is None:
                    running = True
                else:
                    h.codes[r] = rc
        else:  # adopted: not our children; liveness from /proc, exit codes from the files the wrapper wrote
            running = any(self._alive(pid, t) for pid, t in (*h.procs, *h.extra))
            if not running:
                for r, f in zip(h.ranks, h.exit_files, strict=True):
                    h.codes.setdefault(r, self._read_exit(f))
        for r in h.ranks:  # the per-job log cap
            rotate_if_needed(self.log_path(h.job_id, h.n, r), self.log_policy)
        failed = [c for c in h.codes.values() if c != 0]
        if running and failed and h.stopping is None:
            self.stop(h, StopReason.RANK_FAILED, grace_s=min(self.grace_s, 2.0))
        if running and h.kill_at is not None and now >= h.kill_at:
            self._signal(h, signal.SIGKILL)
            h.kill_at = now + 1.0
        if running:
            return False, None
        if self.group_alive(h):  # stragglers the ranks left behind in the group
            self._signal(h, signal.SIGKILL)
        # and every other process of the attempt, also the ones that left the group (setsid, daemons)
        cg.kill_attempt(self.cgroups, self.attempt_key(h.attempt_id), timeout=2.0)
        code: int | None = 0
        for r in sorted(h.codes):
            c = h.codes[r]
            if c != 0:
                code = c
                break
        return True, code

    @staticmethod
    def _read_exit(p: Path) -> int | None:
        text = iso.read_small(p)  # written by the job's user: no links, FIFOs or huge files
        try:
            return None if text is None else int(text.strip())
        except ValueError:
            return None

    def group_alive(self, h: LocalHandle) -> bool:
        if not h.pgid:
            return False
        try:
            os.killpg(h.pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        # killpg(0) also succeeds for zombies; look for a live member
        return any(self._alive(pid, t) for pid, t in (*h.procs, *h.extra)) or self._group_has_live_member(h.pgid)

    @staticmethod
    def _group_has_live_member(pgid: int) -> bool:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            rest = data[data.rfind(b")") + 2 :].split()
            if len(rest) > 2 and int(rest[2]) == pgid and rest[0] not in (b"Z", b"X"):
                return True
        return False

    # -- act -----------------------------------------------------------------------------------------------
    def _signal(self, h: LocalHandle, sig: int, everything: bool = False) -> None:
        """``sig`` to the process group and the known ranks; ``everything``: also to every other process of the
        attempt (its cgroup, its key)."""
        if h.pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(h.pgid, sig)
        for pid, t in (*h.procs, *h.extra):
            if pid != h.pgid and self._alive(pid, t):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
        if everything:
            cg.signal_attempt(self.cgroups, self.attempt_key(h.attempt_id), sig)

    def stop(self, h: Handle, why: StopReason, grace_s: float | None = None) -> None:
        """SIGTERM the attempt's process group now, SIGKILL after the grace period (see :meth:`poll`)."""
        assert isinstance(h, LocalHandle)
        if h.stopping is None:
            h.stopping = StopReason(why)
        g = grace_s if grace_s is not None else h.grace_s if h.grace_s is not None else self.grace_s
        self._signal(h, signal.SIGTERM, everything=True)
        h.kill_at = time.monotonic() + g

    def kill(self, h: Handle) -> None:
        assert isinstance(h, LocalHandle)
        self._signal(h, signal.SIGKILL, everything=True)

    kill_now = kill  # the name before the executor interface

    def close(self) -> None:
        """Remove this executor's cgroup directory if no attempt is left in it (running ones keep theirs)."""
        if self.cgroups is not None:
            self.cgroups.close()
