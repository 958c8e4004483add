"""The accounting report over many usage records: how long ``suanli report`` takes on SQLite and PostgreSQL.

    .venv/bin/python bench/report.py [--records 1000000] [--pg] [--json]

Fills a fresh store with ``--records`` usage records (a month: 20 tenants, 5 queues, 4 accelerator models on 128
nodes of 8, jobs of 1-64 chips, outcomes in realistic shares, a tenth of them with measured energy) in bulk, then
times the report (``control.usage.make_report``: one GROUP BY in the database, pricing per (node, model) cell in
Python) for each grouping, best of ``--repeat``. The issue's bar: under 5 s on SQLite for 1,000,000 records.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from suanli.accounting.pricing import Accounting
from suanli.control import db
from suanli.control.store import Store
from suanli.control.usage import make_report

MODELS = ("H100", "910B", "BR100", "H20")
OUTCOMES = (("succeeded", 0.80), ("preempted", 0.07), ("failed", 0.06), ("node-lost", 0.02), ("cancelled", 0.05))


def fill(store: Store, n: int, t0: float, seed: int = 1) -> float:
    rng = random.Random(seed)
    outs = [o for o, _ in OUTCOMES]
    weights = [w for _, w in OUTCOMES]
    t = time.perf_counter()
    batch = []
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
        job = i // 4  # four attempts (or nodes) per job; tenant and queue are the job's
        batch.append({"attempt_id": i + 1, "job_id": job + 1, "job_name": f"job-{job}",
                      "tenant": f"t{job % 20:02d}", "queue": f"q{job % 5}", "kind": "train",
                      "node": f"n{node:03d}", "model": model, "chips": chips, "started_at": start,
                      "ended_at": start + dur, "chip_s": chip_s, "useful_chip_s": chip_s - lost, "lost_chip_s": lost,
                      "outcome": o, "energy_j": chip_s * 500.0 if rng.random() < 0.1 else None})
        if len(batch) >= 20000:
            with store.write() as c:
                c.execute(db.usage.insert(), batch)
            batch = []
    if batch:
        with store.write() as c:
            c.execute(db.usage.insert(), batch)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--pg", action="store_true", help="PostgreSQL (a throw-away server) instead of SQLite")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-job", action="store_true", help="leave out --by job (250,000 rows for 1,000,000 records)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
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
    else:
        url = db.sqlite_url(Path(tmp.name) / "usage.db")
    try:
        store = Store.open(url)
        t0 = 1_700_000_000.0
        fill_s = fill(store, a.records, t0)
        acct = Accounting()
        out = {"backend": "postgresql" if a.pg else "sqlite", "records": a.records, "fill_s": round(fill_s, 2)}
        groups = [(), ("tenant",), ("queue",), ("model",), ("node",), ("tenant", "model"), ("job",)]
        for by in groups[:-1] if a.no_job else groups:
            best = cpu = float("inf")
            rows = 0
            for _ in range(a.repeat if by != ("job",) else 1):
                acct = Accounting()  # cold pricing cache each time
                t, c = time.perf_counter(), time.process_time()
                rep = make_report(store, since=t0, until=t0 + 30 * 86400.0, by=by, acct=acct)
                best = min(best, time.perf_counter() - t)
                cpu = min(cpu, time.process_time() - c)  # this process only (PostgreSQL works in its own)
                rows = len(rep["rows"])
            out[f"by_{'_'.join(by) or 'total'}_s"] = round(best, 3)
            out[f"by_{'_'.join(by) or 'total'}_cpu_s"] = round(cpu, 3)
            out[f"by_{'_'.join(by) or 'total'}_rows"] = rows
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
