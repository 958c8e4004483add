"""Who a job runs as, and what it can reach on disk (issue 9: jobs must not read the controller's data).

When the controller runs as root (a cluster node), each tenant's jobs run as an unprivileged OS user of their own
(Slurm runs jobs as the submitting user): one the operator maps to the tenant (``--job-users map --user-map FILE``)
or one created for it (``suanli-<tenant>``, a system account without a home or a login shell). The data directory
then is ``0711`` (a job can reach its own job directory by path but cannot list anything) and everything in it
that is not a job's is root's and private (``0600``/``0700``); a job's work and checkpoint directories belong to
its tenant's user (``0700``), its logs to root.

When the controller cannot switch users (it is not root: a laptop, a single user), every job runs as the
controller's own user and can read everything that user can: the database (with every job's env), the admin
token, other tenants' logs. ``suanli up`` says so at start; tenants must then trust each other.

Nothing here is specific to the local executor: a remote executor (Ray) resolves the same :class:`JobUser` per
tenant and prepares the same directories on its node.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suanli.errors import SuanliError

log = logging.getLogger("suanli.isolation")

MODES = ("auto", "create", "map", "shared")
USER_PREFIX = "suanli-"
DEVICE_GROUPS = ("video", "render")  # accelerator device nodes are often group-accessible only (AMD /dev/kfd)
_USERNAME_RE = re.compile(r"[a-z_][a-z0-9_-]{0,30}")


class IsolationError(SuanliError):
    pass


@dataclass(frozen=True, slots=True)
class JobUser:
    """The OS identity a job runs as. ``uid`` None: the controller's own user (no switch)."""

    name: str
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()

    @property
    def switches(self) -> bool:
        return self.uid is not None


def can_switch_users() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def username_for(tenant: str, prefix: str = USER_PREFIX) -> str:
    """The OS user created for ``tenant``: ``suanli-<tenant>`` when that is a valid user name of at most 32
    characters, else a shortened, lower-cased name with a hash of the tenant (distinct tenants, distinct users)."""
    plain = prefix + tenant
    if _USERNAME_RE.fullmatch(plain):
        return plain
    clean = re.sub(r"[^a-z0-9_-]", "-", tenant.lower())[:14].strip("-") or "t"
    return f"{prefix}{clean}-{hashlib.sha256(tenant.encode()).hexdigest()[:8]}"


def load_user_map(path: str | Path) -> dict[str, str]:
    """A tenant -> OS user mapping file: YAML or JSON, ``{tenant: user}``."""
    import yaml

    from suanli.specfile import load_bounded

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise IsolationError(f"--user-map {p}: cannot read: {e.strerror or e}") from None
    try:
        data, _ = load_bounded(text, str(p))
    except (SuanliError, yaml.YAMLError, json.JSONDecodeError) as e:
        raise IsolationError(f"--user-map {p}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str | int)
                                             for k, v in data.items()):
        raise IsolationError(f"--user-map {p}: expected a mapping of tenant names to OS user names")
    return {k: str(v) for k, v in data.items()}


@dataclass
class JobUsers:
    """Resolves tenants to OS users, as the operator configured (``mode``):

    - ``shared``: every job runs as the controller's user (the only choice when it is not root);
    - ``create``: ``suanli-<tenant>`` users, created on first use (``useradd --system``);
    - ``map``: the users of ``user_map`` (tenant -> user name or uid); a tenant without an entry cannot run jobs;
    - ``auto``: ``create`` when the controller is root, else ``shared``.
    """

    mode: str = "auto"
    user_map: dict[str, str] = field(default_factory=dict)
    prefix: str = USER_PREFIX
    extra_groups: tuple[str, ...] = DEVICE_GROUPS
    _cache: dict[str, JobUser] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise IsolationError(f"--job-users: choose one of {', '.join(MODES)}")
        if self.mode == "auto":
            self.mode = "create" if can_switch_users() else "shared"
        if self.mode in ("create", "map") and not can_switch_users():
            raise IsolationError(f"--job-users {self.mode}: the controller must run as root to start jobs as "
                                 "other users")
        if self.mode == "map" and not self.user_map:
            raise IsolationError("--job-users map needs --user-map FILE (tenant: user)")

    @property
    def switches(self) -> bool:
        return self.mode != "shared"

    def warning(self) -> str | None:
        """What ``suanli up`` says at start when tenants are not isolated from each other."""
        if self.switches:
            return None
        return ("jobs run as this server's user: they can read its data directory (database with every job's "
                "env, admin token, all logs), so tenants must trust each other; run `suanli up` as root for "
                "per-tenant OS users (see docs/security.md)")

    def for_tenant(self, tenant: str) -> JobUser:
        if not self.switches:
            return JobUser(pwd.getpwuid(os.getuid()).pw_name if hasattr(os, "getuid") else "", None)
        with self._lock:
            u = self._cache.get(tenant)
            if u is None:
                u = self._resolve(tenant)
                self._cache[tenant] = u
            return u

    def _resolve(self, tenant: str) -> JobUser:
        if self.mode == "map":
            name = self.user_map.get(tenant)
            if name is None:
                raise IsolationError(f"no OS user is mapped to tenant {tenant!r} (--user-map)")
            pw = _getpw(name)
            if pw is None:
                raise IsolationError(f"the OS user {name!r} mapped to tenant {tenant!r} does not exist")
        else:
            name = username_for(tenant, self.prefix)
            pw = _getpw(name)
            if pw is None:
                _useradd(name, tenant)
                pw = _getpw(name)
                if pw is None:
                    raise IsolationError(f"created OS user {name!r} for tenant {tenant!r} but cannot find it")
        if pw.pw_uid == 0 or pw.pw_uid == os.getuid():
            raise IsolationError(f"tenant {tenant!r} maps to OS user {pw.pw_name!r} (uid {pw.pw_uid}), which is "
                                 "the controller's or root: refused")
        groups = [pw.pw_gid]
        for g in self.extra_groups:
            with contextlib.suppress(KeyError):
                groups.append(grp.getgrnam(g).gr_gid)
        return JobUser(pw.pw_name, pw.pw_uid, pw.pw_gid, tuple(dict.fromkeys(groups)))


def _getpw(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return None


def _useradd(name: str, tenant: str) -> None:
    exe = shutil.which("useradd") or "/usr/sbin/useradd"
    shell = "/usr/sbin/nologin" if Path("/usr/sbin/nologin").exists() else "/bin/false"
    cmd = [exe, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", shell,
           "--comment", f"suanli tenant {tenant}"[:64], name]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise IsolationError(f"cannot create OS user {name!r} for tenant {tenant!r}: {e}") from None
    if r.returncode != 0 and _getpw(name) is None:  # 9: exists (created concurrently): fine
        raise IsolationError(f"cannot create OS user {name!r} for tenant {tenant!r}: "
                             f"{(r.stderr or r.stdout).strip()}")
    log.warning("created OS user %s for tenant %s", name, tenant)


# -- the data directory and the job directories ----------------------------------------------------------------
PRIVATE_FILES = ("suanli.db", "suanli.db-wal", "suanli.db-shm", "suanli.db.controller-lock", "admin.token",
                 "server.json", "lock")


def secure_data_dir(dd: Path, users: JobUsers) -> None:
    """The data directory: ``0700``, or ``0711`` when jobs run as other users (they reach their own job directory
    by its path, list nothing); its files ``0600``; ``jobs/`` ``0711``."""
    dd.mkdir(parents=True, exist_ok=True)
    if users.switches:
        for parent in dd.resolve().parents:  # the jobs' users must get through every directory above
            if not os.stat(parent).st_mode & 0o001:
                raise IsolationError(f"jobs run as other OS users but cannot reach {dd / 'jobs'}: {parent} is not "
                                     f"searchable by others (chmod o+x {parent}, use a data directory elsewhere, "
                                     "e.g. /var/lib/suanli, or --job-users shared if all tenants trust each other)")
    os.chmod(dd, 0o711 if users.switches else 0o700)
    for name in PRIVATE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(dd / name, 0o600)
    jobs = dd / "jobs"
    jobs.mkdir(exist_ok=True)
    os.chmod(jobs, 0o711 if users.switches else 0o700)


@dataclass(frozen=True, slots=True)
class JobDirs:
    root: Path
    work: Path
    checkpoint: Path
    logs: Path
    attempt: Path


def prepare_job_dirs(job_dir: Path, n: int, user: JobUser, checkpoint: Path | None = None) -> JobDirs:
    """A job's directories for attempt ``n``, owned as they must be: ``work``, ``checkpoint`` (default: in the job
    directory; a shared checkpoint root's ``<root>/<job id>`` otherwise) and the attempt's exit-file directory by
    the job's user (``0700``); the job directory (``0711``) and ``logs`` (``0700``) by the controller. Directories
    that exist with another owner (a job that replaced one by a link) are refused."""
    work, logs = job_dir / "work", job_dir / "logs"
    ckpt = checkpoint if checkpoint is not None else job_dir / "checkpoint"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    att = job_dir / "attempts" / str(n)
    uid = user.uid if user.switches else os.getuid()
    gid = user.gid if user.switches else os.getgid()
    me, my_gid = os.getuid(), os.getgid()
    job_dir.parent.mkdir(parents=True, exist_ok=True)
    _own_dir(job_dir, me, my_gid, 0o711 if user.switches else 0o700)
    _own_dir(logs, me, my_gid, 0o700)
    _own_dir(job_dir / "attempts", me, my_gid, 0o711 if user.switches else 0o700)
    for d in (work, ckpt, att):
        _own_dir(d, uid, gid, 0o700)  # type: ignore[arg-type]
    return JobDirs(job_dir, work, ckpt, logs, att)


def _own_dir(d: Path, uid: int, gid: int, mode: int) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(d, mode)
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode):
        raise IsolationError(f"{d} is not a directory (replaced by a job?): refused")
    if st.st_uid != uid or st.st_gid != gid:
        if st.st_uid not in (uid, os.getuid()):
            raise IsolationError(f"{d} belongs to uid {st.st_uid}, expected {uid}: refused")
        os.chown(d, uid, gid, follow_symlinks=False)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(d, mode)


def open_log(path: Path) -> int:
    """Open (append) a job's log file for writing by the controller without following a link a job placed."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def read_small(path: Path, limit: int = 64) -> str | None:
    """A small file a job may have written (an exit status): no links followed, no FIFOs or devices opened for
    reading (they could block the controller), at most ``limit`` bytes. None when absent or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("ascii", "replace")
    finally:
        os.close(fd)


def spawn_kwargs(user: JobUser) -> dict[str, Any]:
    """``subprocess.Popen`` arguments that start a process as ``user`` (nothing when it does not switch)."""
    if not user.switches:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups), "umask": 0o077}
