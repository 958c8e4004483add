"""Store consistency check (job, attempt and event tables agree): run after a soak.

    .venv/bin/python bench/store_check.py DATA_DIR_OR_DB_URL [--json]

Exit status 0 when consistent, 1 with the first problems listed otherwise. See :mod:`suanli.control.check`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from suanli.control.check import check_store
from suanli.control.db import make_engine, sqlite_url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("where", help="a `suanli up` data directory (its suanli.db) or a database URL")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    url = a.where if "://" in a.where else sqlite_url(Path(a.where) / "suanli.db")
    r = check_store(make_engine(url))
    out = {"ok": r.ok, "jobs": r.jobs, "attempts": r.attempts, "events": r.events, "by_state": r.by_state,
           "problems": r.problem_count, "first_problems": r.problems[:20]}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{'consistent' if r.ok else 'INCONSISTENT'}: {r.jobs} jobs, {r.attempts} attempts, {r.events} events; "
              f"states {r.by_state}; {r.problem_count} problems")
        for p in r.problems[:20]:
            print("  " + p)
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
