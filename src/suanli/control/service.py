"""Putting the control plane together on one machine: data directory, store, this node, controller and API."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suanli.control.controller import Controller
from suanli.control.db import sqlite_url
from suanli.control.executors.base import DeviceInfo, Executor, NodeInfo, parse_partitions
from suanli.control.executors.local import LocalExecutor
from suanli.control.history import Sampler
from suanli.control.isolation import JobUsers, secure_data_dir
from suanli.control.logs import LogPolicy
from suanli.control.metrics import Metrics
from suanli.control.services import ServiceManager
from suanli.control.store import Store, hash_token
from suanli.control.usage import accounting_from_dir
from suanli.devices import LocalDevice, discover, health, host_cpu_memory, parse_declared
from suanli.errors import SuanliError

ADMIN_TOKEN_FILE = "admin.token"
SERVER_FILE = "server.json"


@dataclass
class Service:
    data_dir: Path
    store: Store
    executor: Executor
    controller: Controller
    metrics: Metrics
    node: str
    devices: list[LocalDevice]
    admin_token_path: Path
    app: Any = None  # the API, when built by suanli.api.server.open_service
    services: Any = None  # the service manager (suanli.control.services.ServiceManager)


def ensure_admin_token(store: Store, data_dir: Path, rotate: bool = False) -> Path:
    """The local admin token: kept in ``data_dir/admin.token`` (mode 0600), stored hashed in the database.
    ``rotate``: revoke every admin token (the file's and any other) and write a new one."""
    path = data_dir / ADMIN_TOKEN_FILE
    if path.exists() and not rotate:
        tok = path.read_text().strip()
        p = store.authenticate(tok)
        if p is not None and p.admin:
            return path
    label = f"local admin ({data_dir})"
    if rotate:
        tok = store.rotate_tokens(admin=True, label=label)
    else:
        tok = store.create_token(admin=True, tenant=None, label=label)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(tok + "\n")
    os.replace(tmp, path)
    assert store.authenticate(tok) is not None and hash_token(tok)
    return path


def local_node(name: str, devs: list[LocalDevice], partitions: tuple[str, ...] = ()) -> NodeInfo:
    """This machine as a node: its devices, CPU and memory; its own interconnect domain, rack "local"; the
    partitions ``suanli up --partition`` gives it."""
    cpu, mem = host_cpu_memory()
    return NodeInfo(name, tuple(DeviceInfo(d.index, d.model, d.uuid, d.memory_mib, d.declared) for d in devs),
                    cpu, mem, name, "local", partitions=partitions)


def device_probe(devs: list[LocalDevice], node: str) -> Any:
    """The local executor's health probe: :func:`suanli.devices.health` of this machine's devices (vendor probes
    for discovered ones, injected faults for all)."""
    if not devs:
        return None

    def probe(_: Any) -> dict[int, tuple[bool, str | None]]:
        return {h.index: (h.healthy, h.reason or None) for h in health(devs, node=node)}

    return probe


def register_node(store: Store, name: str, devs: list[LocalDevice]) -> None:
    spec, rows = local_node(name, devs).store_spec()
    store.upsert_node(spec, rows)


class DataDirLocked(SuanliError):
    pass


def lock_data_dir(dd: Path) -> int:
    """Hold an exclusive lock on ``dd/lock`` for the life of this process (the kernel drops it when the process
    dies, SIGKILL included): two controllers on one data directory would both run its jobs."""
    fd = os.open(dd / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirLocked(f"{dd} is in use by another `suanli up` (lock {dd / 'lock'})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


_PG_LOCK_KEY = 0x5375616E6C69  # "Suanli"
_held: list[object] = []  # what keeps the database lock alive for the life of the process


def lock_database(store: Store) -> None:
    """One controller per database (each admits every pending job). PostgreSQL: a session advisory lock held on a
    dedicated connection; SQLite: a lock file next to the database file."""
    if store.is_sqlite:
        path = store.engine.url.database
        if path and path != ":memory:":
            fd = os.open(path + ".controller-lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise DataDirLocked(f"database {path} is in use by another `suanli up`") from None
            _held.append(fd)
        return
    conn = store.engine.connect()
    got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({_PG_LOCK_KEY})").scalar()
    conn.commit()
    if not got:
        conn.close()
        raise DataDirLocked("the PostgreSQL database is in use by another `suanli up` (advisory lock held)")
    _held.append(conn)


def open_service(data_dir: str | Path = ".suanli", *, db: str | None = None, devices: str | None = None,
                 node: str | None = None, policy: str = "fifo", tick_s: float = 0.1, retry_base_s: float = 2.0,
                 grace_s: float = 5.0, sync: str = "normal", keep_jobs_on_stop: bool = False,
                 lock: bool = False, virtual: str | None = None, speed: float = 1.0,
                 fault_rate: float | None = None, fault_seed: int = 0, sample_s: float = 15.0,
                 ray: str | None = None, checkpoint_root: str | Path | None = None,
                 ray_work_dir: str | Path | None = None, agent_timeout_s: float = 30.0,
                 node_users: tuple[str, dict[str, str]] | None = None,
                 job_users: JobUsers | None = None, log_policy: LogPolicy | None = None,
                 rotate_admin_token: bool = False, partitions: str | Sequence[str] | None = None) -> Service:
    """Open (creating if needed) the data directory and database, register this machine and build the controller.
    Nothing runs yet: call ``service.controller.start()``. The API over it: :func:`suanli.api.server.open_service`
    (``control`` does not import ``api``).

    ``virtual`` (a cluster file or ``1250x8xBR100``): no local node; the executor is
    :class:`~suanli.control.executors.virtual.VirtualExecutor` on those nodes, its clock ``speed`` times the wall
    clock (retry back-offs shrink alike), with the twin's random faults at ``fault_rate`` per device-hour.
    ``sample_s``: how often the controller records a history sample (the dashboard's "Over time").

    ``job_users``: which OS user each tenant's jobs run as (default: the controller's own, ``shared``; ``suanli up``
    uses ``auto``: per-tenant users when it runs as root). ``log_policy``: the cap and rotation of job logs.
    ``rotate_admin_token``: revoke every admin token and write a new ``admin.token``. ``partitions``: the partitions
    this machine belongs to (names, or comma-separated; ``suanli up --partition``); an admin's value set through the
    API (``PATCH /v1/nodes/{name}``) wins over them until cleared."""
    parts = parse_partitions(partitions)
    if parts and (virtual is not None or ray):
        raise SuanliError("--partition names this machine's partitions: a virtual fleet's pools name theirs in the "
                          "fleet file (partitions: [...]), Ray nodes the label suanli.io/partitions")
    dd = Path(data_dir).resolve()
    dd.mkdir(parents=True, exist_ok=True)
    users = job_users or JobUsers("shared")
    if lock:
        lock_data_dir(dd)
    store = Store.open(db or sqlite_url(dd / "suanli.db"), sync=sync)
    if lock:
        lock_database(store)
    store.ensure_defaults()
    ex: Executor
    retry_cap_s = 300.0
    if virtual is not None:
        from suanli.control.executors.virtual import VirtualExecutor, parse_faults, virtual_cluster

        devs: list[LocalDevice] = []
        name = node or "virtual"
        users = JobUsers("shared")  # no process runs: no other user needs to reach the job directories
        ex = VirtualExecutor(virtual_cluster(virtual), dd, speed=speed, faults=parse_faults(fault_rate, fault_seed),
                             grace_s=grace_s)
        retry_base_s, retry_cap_s = retry_base_s / ex.speed, retry_cap_s / ex.speed
    elif ray:  # cluster mode: the nodes come from Ray (the controller registers them as its agents report)
        if devices or node:
            raise SuanliError("--devices and --node describe this machine; with --ray every node describes itself "
                              "(Ray node labels suanli.io/devices, suanli.io/name)")
        from suanli.control.executors.ray import RayExecutor

        devs = []
        name = "ray"
        ex = RayExecutor(dd, ray, work_root=ray_work_dir, checkpoint_root=checkpoint_root, grace_s=grace_s,
                         agent_timeout_s=agent_timeout_s, users=node_users or (users.mode, dict(users.user_map)),
                         log_policy=log_policy)
    else:
        devs = parse_declared(devices) if devices else discover()
        name = node or socket.gethostname() or "local"
        me = local_node(name, devs, parts)
        store.upsert_node(*me.store_spec())
        ex = LocalExecutor(dd, node=me, grace_s=grace_s, checkpoint_root=checkpoint_root,
                           health_probe=device_probe(devs, name), users=users, log_policy=log_policy)
    tok_path = ensure_admin_token(store, dd, rotate=rotate_admin_token)
    # 0700 (0711 when local jobs run as other users: they reach their job directories by path), its files 0600
    secure_data_dir(dd, users if isinstance(ex, LocalExecutor) else JobUsers("shared"))
    metrics = Metrics()
    metrics.store = store
    metrics.accounting = accounting_from_dir(dd)  # <data>/fleet.yaml: PUE, prices, tariff (suanli report)
    metrics.sampler = Sampler(store, interval_s=sample_s)
    services = ServiceManager(store)
    ctl = Controller(store, ex, policy=policy, tick_s=tick_s, retry_base_s=retry_base_s, retry_cap_s=retry_cap_s,
                     keep_jobs_on_stop=keep_jobs_on_stop, metrics=metrics, services=services,
                     freeze_gc=lock, trim_every_s=60.0 if lock else 0.0)  # lock: the long-running `suanli up`
    services.address_of = lambda node: ctl.node_addresses.get(node)  # kept current from the executor's membership
    return Service(dd, store, ex, ctl, metrics, name, devs, tok_path, services=services)
