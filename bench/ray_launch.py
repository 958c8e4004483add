"""Cluster mode on a local Ray cluster: launch latency of a gang, and recovery from a lost node.

- Launch: a 4-rank gang over 4 nodes (one BR100 declared on each, ``suanli.io/devices=1xBR100``), submitted 50
  times one after the other; latency = submit -> the last rank's command running (each rank writes the time it
  started). p50 / p99.
- Recovery: a 1-device job runs; its node dies; seconds until the job runs again on another node (p50 over the runs),
  and how much of it is Ray's own dead-node detection (when ``ray.nodes()`` first says the node is dead). A new node
  replaces the dead one before the next run. ``--plug kill`` (default): the node's raylet is SIGKILLed as
  ``ray.cluster_utils`` does and its processes exit, which the agent's callers notice at once. ``--plug freeze``:
  every process of the node (raylet, agent, ranks) is stopped with SIGSTOP, like a server that loses power or network
  - nothing answers, nothing closes a connection - so only Ray's health checks can tell.

Ray's detection is set by its GCS health checks (``health_check_period_ms`` x ``health_check_failure_threshold``,
plus ``health_check_timeout_ms``); ``--period-ms/--threshold`` set them here (Ray's defaults: 3000 ms x 5).

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 .venv/bin/python bench/ray_launch.py [--jobs 50] [--recoveries 10] [--json]
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse
import contextlib
import json
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))] if s else float("nan")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            ppid = int(data[data.rfind(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--recoveries", type=int, default=10)
    ap.add_argument("--period-ms", type=int, default=500, help="Ray health_check_period_ms (Ray's default 3000)")
    ap.add_argument("--threshold", type=int, default=3, help="Ray health_check_failure_threshold (default 5)")
    ap.add_argument("--tick", type=float, default=0.1, help="controller tick, seconds (suanli up's default 0.1)")
    ap.add_argument("--plug", choices=("kill", "freeze"), default="kill", help="how the node dies (see above)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from suanli.control.service import open_service
    from suanli.workload.spec import JobSpec

    base = Path(tempfile.mkdtemp(prefix="suanli-ray-bench-"))
    cfg = {"health_check_initial_delay_ms": 0, "health_check_period_ms": a.period_ms,
           "health_check_timeout_ms": min(a.period_ms * 2, 10_000), "health_check_failure_threshold": a.threshold}
    t0 = time.perf_counter()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": dict(cfg)})
    serial = 0

    def add(name: str) -> Any:
        return c.add_node(num_cpus=1, labels={"suanli.io/devices": "1xBR100", "suanli.io/name": name})

    nodes = {f"n{i}": add(f"n{i}") for i in range(4)}
    c.wait_for_nodes()
    up_s = time.perf_counter() - t0
    svc = open_service(base / "data", ray=c.address, checkpoint_root=base / "ckpt", ray_work_dir=base / "work",
                       tick_s=a.tick, grace_s=1.0)
    svc.controller.nodes_every_s = 0.5
    svc.controller.start()
    assert svc.controller.ready.wait(120), svc.controller.error
    st = svc.store
    marks = base / "marks"
    marks.mkdir()
    out: dict[str, Any] = {"cluster_start_s": round(up_s, 1), "nodes": 4, "ray_health_check": cfg, "plug": a.plug}
    try:
        lat: list[float] = []
        cmd = ["sh", "-c", f"date +%s.%N > {marks}/$SUANLI_JOB_ID.$RANK"]
        for _ in range(a.jobs):
            t = time.time()
            jid = st.submit(JobSpec(name="gang", resources={"accelerators": 4, "per_node": 1}, command=cmd))["id"]
            files = [marks / f"{jid}.{r}" for r in range(4)]
            wait_for(lambda files=files: all(f.exists() and f.read_text().strip() for f in files), 60, "ranks")
            lat.append(max(float(f.read_text()) for f in files) - t)
            wait_for(lambda jid=jid: st.get_job(jid)["state"] == "succeeded", 60, "gang done")
        if lat:
            out["launch_s"] = {"jobs": len(lat), "p50": round(pct(lat, 50), 3), "p99": round(pct(lat, 99), 3),
                               "max": round(max(lat), 3)}

        rec: list[float] = []
        det: list[float] = []
        noticed: list[float] = []  # kill -> the attempt ended node-lost and the job requeued
        gone: list[float] = []  # kill -> the node's agent process exited (--plug kill)
        for i in range(a.recoveries):
            jid = st.submit(JobSpec(name="victim", resources={"accelerators": 1}, command=["sleep", "300"]))["id"]
            j = wait_for(lambda jid=jid: (x := st.get_job(jid))["attempt_list"] and x["attempt_list"][0]["procs"]
                         and x, 60, "running")
            att = j["attempt_list"][0]
            victim = att["placement"]["nodes"][0]
            vid = nodes[victim].node_id
            pgids = [pg for _n, _p, pg in att["procs"] if pg]
            agent_pid = next(n.info["pid"] for n in svc.executor._nodes.values()
                             if n.name == victim and n.info)
            for pg in pgids:  # the ranks live on this machine too: frozen now, killed with their node
                os.killpg(pg, signal.SIGSTOP)
            dead_node = nodes.pop(victim)
            frozen: list[int] = []
            t_kill = time.time()
            if a.plug == "freeze":
                raylet = dead_node.all_processes["raylet"][0].process.pid
                frozen = [raylet, *descendants(raylet)]
                for pid in frozen:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
            else:
                c.remove_node(dead_node, allow_graceful=False)
                end = time.monotonic() + 10
                while os.path.exists(f"/proc/{agent_pid}") and time.monotonic() < end:
                    time.sleep(0.01)
                gone.append(time.time() - t_kill)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(agent_pid, signal.SIGKILL)
                for pg in pgids:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pg, signal.SIGKILL)
            t_dead = None
            while True:
                if t_dead is None and not next((n["Alive"] for n in ray.nodes() if n["NodeID"] == vid), True):
                    t_dead = time.time()
                j = st.get_job(jid)
                if j["attempts"] >= 2 and j["attempt_list"][1]["procs"]:
                    break
                if time.time() - t_kill > 120:
                    raise SystemExit(f"no recovery within 120 s: {st.events(jid)}")
                time.sleep(0.02)
            t_back = j["attempt_list"][1]["started_at"]
            t_req = next(e["at"] for e in st.events(jid) if e["kind"] == "requeued")
            noticed.append(t_req - t_kill)
            rec.append(t_back - t_kill)
            det.append((t_dead or time.time()) - t_kill)
            if frozen:  # the frozen server goes for good
                c.remove_node(dead_node, allow_graceful=False)
                for pid in frozen:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                for pg in pgids:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pg, signal.SIGKILL)
            st.request_cancel(jid)
            wait_for(lambda jid=jid: st.get_job(jid)["state"] == "cancelled", 60, "cancel")
            serial += 1
            name = f"r{serial}"
            nodes[name] = add(name)  # a replacement, so each run has the same room
            wait_for(lambda name=name: name in svc.controller.live_nodes, 120, "replacement node")
            if not a.json:
                print(f"  recovery {i + 1}: {rec[-1]:.2f} s (requeued after {noticed[-1]:.2f} s; Ray marked the node "
                      f"dead after {det[-1]:.2f} s" + (f"; its agent exited after {gone[-1]:.2f} s)" if gone else ")"))
        if rec:
            out["recovery_s"] = {"runs": len(rec), "p50": round(statistics.median(rec), 2),
                                 "max": round(max(rec), 2),
                                 "requeued_p50": round(statistics.median(noticed), 2),
                                 "agent_exited_p50": round(statistics.median(gone), 2) if gone else None,
                                 "ray_dead_node_detection_p50": round(statistics.median(det), 2)}
    finally:
        svc.controller.stop()
        if hasattr(svc.executor, "shutdown_agents"):
            with contextlib.suppress(Exception):
                svc.executor.shutdown_agents()
        svc.store.close()
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
    if a.json:
        print(json.dumps(out))
    else:
        print(f"cluster of 4 nodes up in {out['cluster_start_s']} s; Ray health checks {cfg}")
        if "launch_s" in out:
            ls = out["launch_s"]
            print(f"launch, 4-rank gang on 4 nodes, {ls['jobs']} jobs: p50 {ls['p50'] * 1000:.0f} ms, "
                  f"p99 {ls['p99'] * 1000:.0f} ms, max {ls['max'] * 1000:.0f} ms")
        if rec:
            r = out["recovery_s"]
            print(f"node {a.plug} -> running elsewhere, {r['runs']} runs: p50 {r['p50']} s (max {r['max']} s; "
                  f"requeued after p50 {r['requeued_p50']} s); Ray's dead-node detection p50 "
                  f"{r['ray_dead_node_detection_p50']} s")


if __name__ == "__main__":
    main()
