"""A throwaway PostgreSQL cluster on a loopback port: ``initdb`` in a temporary directory, ``pg_ctl`` to start it.

For tests, benchmarks and a newcomer's local run; never a mock: the real
server of the Debian ``postgresql`` package (``make setup`` installs it where
apt is usable).  ``initdb`` refuses to run as root, so as root the cluster is
made and run by the ``postgres`` OS user (the package creates it) in a
directory that user owns.  The cluster listens on 127.0.0.1 only (no Unix
socket), with one superuser ``yidi`` whose password is random and appears in
no log (``url`` holds it; ``safe_url`` does not).
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from typing import Callable

SUPERUSER = "yidi"


def binaries() -> str | None:
    """The directory holding initdb and pg_ctl (PATH first, then Debian's /usr/lib/postgresql/N/bin), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(found))
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(bindir, "initdb")) and os.path.exists(os.path.join(bindir, "pg_ctl")):
            return bindir
    return None


def missing_reason() -> str:
    """Why a cluster cannot be made here ("" when it can)."""
    if binaries() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed: Debian package postgresql (make setup)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres OS user to run initdb as (Debian package postgresql)"
    return ""


def run_as() -> pwd.struct_passwd | None:
    """The OS user PostgreSQL runs as: ``postgres`` when we are root (initdb and postgres refuse root), else
    ourselves (None)."""
    return pwd.getpwnam("postgres") if os.geteuid() == 0 else None


def demote(user: pwd.struct_passwd | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child process ``user`` (None: stays as it is)."""
    if user is None:
        return None

    def become() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return become


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One PostgreSQL server in its own temporary directory; ``stop()`` ends it and removes the directory."""

    def __init__(self, port: int = 0, settings: dict[str, str] | None = None) -> None:
        why = missing_reason()
        if why:
            raise RuntimeError(why)
        self.bindir = binaries()
        self.port = port or free_port()
        self.password = secrets.token_hex(16)
        self.root = tempfile.mkdtemp(prefix="yidi-pg-")
        self.datadir = os.path.join(self.root, "data")
        self.logfile = os.path.join(self.root, "server.log")
        self._user = run_as()
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._settings = {"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                          "unix_socket_directories": "''", "max_connections": "60", "shared_buffers": "64MB",
                          **(settings or {})}
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{name}"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8", PGTZ="UTC")
        done = subprocess.run(argv, cwd=self.root, env=env, preexec_fn=demote(self._user), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).decode("utf-8", "replace")[-2000:]
            raise RuntimeError(f"{os.path.basename(argv[0])} failed ({done.returncode}): {tail}")

    def start(self) -> "Cluster":
        pwfile = os.path.join(self.root, "pw")
        with open(pwfile, "w", encoding="ascii") as f:
            f.write(self.password + "\n")
        if self._user is not None:
            os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
        os.chmod(pwfile, 0o600)
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", SUPERUSER, "--pwfile", pwfile,
                  "-A", "scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions")
        os.remove(pwfile)
        with open(os.path.join(self.datadir, "postgresql.auto.conf"), "a", encoding="ascii") as f:
            for name, value in self._settings.items():
                f.write(f"{name} = {value}\n")
        return self.resume()

    def resume(self) -> "Cluster":
        """Start the server (again) on its files."""
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", self.logfile, "-w", "-t", "60",
                  "start")
        self.started = True
        return self

    def halt(self) -> None:
        """Stop the server at once, as a crash would (immediate mode: no checkpoint), keeping its files."""
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "immediate", "-w", "stop")
        self.started = False

    def pids(self) -> tuple[int, ...]:
        """The server's processes now: the postmaster and its children (a backend per connection, the WAL
        writer ...), for a benchmark's CPU accounting."""
        with open(os.path.join(self.datadir, "postmaster.pid"), encoding="ascii") as f:
            postmaster = int(f.readline())
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (FileNotFoundError, ProcessLookupError):
                    continue
                if ppid == postmaster:
                    children.append(int(entry))
        return (postmaster, *children)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def stop(self) -> None:
        try:
            if self.started:
                self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "fast", "-w", "stop")
                self.started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
