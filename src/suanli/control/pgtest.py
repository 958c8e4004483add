"""A throw-away PostgreSQL server for tests and benchmarks (from the server binaries, no system service needed).

``SUANLI_TEST_PG_URL`` (a server CI started) wins; otherwise ``initdb``/``pg_ctl`` are looked up on PATH and under
``/usr/lib/postgresql/*/bin``. As root the server runs as the ``postgres`` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


class TempPostgres:
    """Start with :meth:`start` (returns a server URL), stop with :meth:`stop`."""

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable  # fsync and synchronous commits on (benchmarks); off by default (tests)
        self.dir: Path | None = None
        self.url: str | None = None
        self._as: list[str] = []

    def start(self) -> str | None:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            return None
        self.dir = Path(tempfile.mkdtemp(prefix="suanli-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                return None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        run = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "cwd": "/"}
        subprocess.run([*self._as, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E",
                        "UTF8"], **run)
        opts = f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run([*self._as, pg_ctl, "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "-t",
                        "30", "start"], **run)
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        return self.url

    def stop(self) -> None:
        if self.dir is None:
            return
        pg_ctl = pg_bin("pg_ctl")
        if pg_ctl:
            subprocess.run([*self._as, pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


def fresh_database(server_url: str) -> str:
    """Create an empty database on the server and return its URL."""
    import psycopg

    name = "suanli_" + uuid.uuid4().hex[:12]
    base = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}"


_server: TempPostgres | None = None
_server_url: str | None = None


def server_url_for_tests() -> tuple[str | None, str]:
    """(URL, why not) of a PostgreSQL server for tests: ``SUANLI_TEST_PG_URL``, else one throw-away server per
    process (stopped at exit)."""
    global _server, _server_url
    env = os.environ.get("SUANLI_TEST_PG_URL")
    if env:
        return env, ""
    if _server_url is not None:
        return _server_url, ""
    if not pg_bin("initdb"):
        return None, "no PostgreSQL server binaries (initdb) and SUANLI_TEST_PG_URL is not set"
    import atexit

    _server = TempPostgres()
    try:
        _server_url = _server.start()
    except (subprocess.CalledProcessError, OSError) as e:
        err = getattr(e, "stderr", b"") or b""
        return None, f"could not start a PostgreSQL server: {e} {err.decode(errors='replace')[-300:]}"
    atexit.register(_server.stop)
    if _server_url is None:
        return None, "PostgreSQL binaries found but no 'postgres' user to run the server as (it refuses root)"
    return _server_url, ""
