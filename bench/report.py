"""The accounting report over many usage records: how long ``suanli report`` takes on SQLite and PostgreSQL.

    .venv/bin/python bench/report.py [--records 1000000] [--pg] [--db FILE] [--by total,tenant,job] [--json]

Fills a fresh store with ``--records`` usage records (a month: 20 tenants, 5 queues, 4 accelerator models on 128
nodes of 8, 1-8 chips per node, four records per job on random nodes, a tenth of the jobs services, four LLMs,
outcomes in realistic shares, a tenth of the records with measured energy) in bulk, then times the report
(``control.usage.make_report``) for each grouping, best of ``--repeat``, wall-clock and this process's CPU time
(PostgreSQL works in its own processes: their CPU time is ``server_cpu_s``), with the load average. The issue's
bar: under 5 s on SQLite for 1,000,000 records.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from suanli.accounting.pricing import Accounting
from suanli.control import db
from suanli.control.store import Store
from suanli.control.usage import make_report

MODELS = ("H100", "910B", "BR100", "H20")
OUTCOMES = (("succeeded", 0.80), ("preempted", 0.07), ("failed", 0.06), ("node-lost", 0.02), ("cancelled", 0.05))


COLS = ("attempt_id", "job_id", "job_name", "tenant", "queue", "kind", "node", "model", "chips", "started_at",
        "ended_at", "chip_s", "useful_chip_s", "lost_chip_s", "outcome", "energy_j", "llm")
LLMS = ("llama3-70b", "qwen2.5-72b", "qwen2.5-7b", "")


def records(n: int, t0: float, seed: int = 1) -> Iterator[tuple[Any, ...]]:
    """``n`` usage records of a month, as tuples in the order of ``COLS``."""
    rng = random.Random(seed)
    outs = [o for o, _ in OUTCOMES]
    weights = [w for _, w in OUTCOMES]
    month = 30 * 86400.0
    for i in range(n):
        node = rng.randrange(128)
        model = MODELS[node % 4]
        chips = float(rng.choice((1, 2, 4, 8)))
        start = t0 + rng.random() * month
        dur = rng.expovariate(1 / 3600.0)
        o = rng.choices(outs, weights)[0]
        chip_s = chips * dur
        lost = 0.0 if o in ("succeeded", "preempted") else chip_s if o != "node-lost" else chip_s * rng.random()
        job = i // 4  # four attempts (or nodes) per job; tenant, queue, kind and LLM are the job's
        yield (i + 1, job + 1, f"job-{job}", f"t{job % 20:02d}", f"q{job % 5}", "serve" if job % 10 == 0 else "train",
               f"n{node:03d}", model, chips, start, start + dur, chip_s, chip_s - lost, lost, o,
               chip_s * 500.0 if rng.random() < 0.1 else None, LLMS[job % 4])


def fill(store: Store, n: int, t0: float, seed: int = 1) -> float:
    """Bulk insert through the driver (executemany of tuples; the store's own path writes a few per attempt)."""
    t = time.perf_counter()
    sql = f"INSERT INTO usage ({', '.join(COLS)}) VALUES ({', '.join(['?'] * len(COLS))})"
    batch: list[tuple[Any, ...]] = []
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        if not store.is_sqlite:  # PostgreSQL: COPY
            with cur.copy(f"COPY usage ({', '.join(COLS)}) FROM STDIN") as cp:
                for r in records(n, t0, seed):
                    cp.write_row(r)
            raw.commit()
            return time.perf_counter() - t
        cur.execute("BEGIN")  # the engine's connections are in autocommit mode (it emits BEGIN itself)
        for r in records(n, t0, seed):
            batch.append(r)
            if len(batch) >= 50000:
                cur.executemany(sql, batch)
                batch = []
        if batch:
            cur.executemany(sql, batch)
        cur.execute("COMMIT")
    finally:
        raw.close()
    return time.perf_counter() - t


def server_cpu_s(postmaster: int | None) -> float:
    """CPU seconds of a PostgreSQL server so far: the postmaster, its live children (the backend, background
    processes) and the children it reaped (parallel workers), from /proc; 0 without one."""
    if postmaster is None:
        return 0.0
    tck = os.sysconf("SC_CLK_TCK")

    def stat(pid: int) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    f = stat(postmaster)
    total = sum(int(x) for x in f[11:15])  # utime, stime, cutime, cstime
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != postmaster:
            try:
                g = stat(int(d.name))
            except OSError:
                continue
            if int(g[1]) == postmaster:
                total += int(g[11]) + int(g[12])
    return total / tck


GROUPS = {"total": (), "tenant": ("tenant",), "queue": ("queue",), "model": ("model",), "node": ("node",),
          "llm": ("llm",), "tenant,model": ("tenant", "model"), "job": ("job",)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--pg", action="store_true", help="PostgreSQL (a throw-away server) instead of SQLite")
    ap.add_argument("--db", default=None, help="SQLite: keep the filled store in this file and reuse it when it "
                    "already holds --records records (the fill takes a while)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--by", default=",".join(GROUPS), help="groupings to time, among " + ", ".join(GROUPS)
                    + " (tenant,model is one grouping; separate with ';' or ',')")
    ap.add_argument("--no-job", action="store_true", help="leave out --by job")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    wanted = [g for g in GROUPS if g in {x.strip() for x in a.by.replace(";", ",").split(",")} | (
        {"tenant,model"} if "tenant,model" in a.by else set())]
    if a.no_job and "job" in wanted:
        wanted.remove("job")
    pg = None
    tmp = tempfile.TemporaryDirectory()
    if a.pg:
        from suanli.control.pgtest import TempPostgres, fresh_database

        pg = TempPostgres()
        url = pg.start()
        if url is None:
            print("no PostgreSQL binaries found", file=sys.stderr)
            return 1
        url = fresh_database(url)
        assert pg.dir is not None
        postmaster = int((pg.dir / "data" / "postmaster.pid").read_text().split()[0])
    else:
        postmaster = None
        url = db.sqlite_url(Path(a.db) if a.db else Path(tmp.name) / "usage.db")
    try:
        store = Store.open(url)
        t0 = 1_700_000_000.0
        with store.read() as c:
            have = c.execute(sa.select(sa.func.count()).select_from(db.usage)).scalar()
        if have == a.records:
            fill_s = 0.0
        else:
            if have:
                with store.write() as c:
                    c.execute(db.usage.delete())
            fill_s = fill(store, a.records, t0)
            if not store.is_sqlite:
                with store.engine.connect() as c:
                    c.exec_driver_sql("ANALYZE usage")
                    c.commit()
        out: dict[str, Any] = {"backend": "postgresql" if a.pg else "sqlite", "records": a.records,
                               "fill_s": round(fill_s, 2), "load_avg_1m": round(os.getloadavg()[0], 2)}
        for name in wanted:
            by = GROUPS[name]
            best = cpu = server = float("inf")
            rows = 0
            for _ in range(a.repeat):
                acct = Accounting()  # cold pricing cache each time
                t, c, sc = time.perf_counter(), time.process_time(), server_cpu_s(postmaster)
                rep = make_report(store, since=t0, until=t0 + 30 * 86400.0, by=by, acct=acct)
                best = min(best, time.perf_counter() - t)
                cpu = min(cpu, time.process_time() - c)  # this process only (PostgreSQL works in its own)
                server = min(server, server_cpu_s(postmaster) - sc)
                rows = len(rep["rows"])
            key = name.replace(",", "_")
            out[f"by_{key}_s"] = round(best, 3)
            out[f"by_{key}_cpu_s"] = round(cpu, 3)
            if postmaster is not None:
                out[f"by_{key}_server_cpu_s"] = round(server, 3)
            out[f"by_{key}_rows"] = rows
        out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        store.close()
    finally:
        if pg is not None:
            pg.stop()
        tmp.cleanup()
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
