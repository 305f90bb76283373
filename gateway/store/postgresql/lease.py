"""A ledger partition's lease in PostgreSQL: which node owns the partition, until when, with which fencing token.

One row of ``leases`` per partition.  The expiry is the PostgreSQL server's
time (``clock_timestamp()``), never a node's clock:

* ``take``: in ONE transaction, the lease if it is free or has expired, with
  a token one above both the lease's and the partition's head row's, written
  into the head row as well.  Every append rewrites the head row only where
  the token is still the writer's own (store.py), so the moment this commits
  the previous owner's appends are refused (``Deposed``), whether it is dead,
  stalled or still running.  A session still inside an append's transaction
  (its lease expired: its process stopped mid-append, whose backend keeps the
  head row locked and waits for it) is ended first, so the takeover is not
  blocked behind it; its transaction is rolled back, never acknowledged.
* ``renew``: the expiry pushed on, where the token is still ours.
* ``release``: expired now, where the token is still ours (a clean stop), so
  a standby need not wait for the expiry.

``LeaseKeeper`` runs them from a thread with a connection of its own.  It
believes it holds the lease until ``sent + ttl_s`` by its own monotonic
clock, where ``sent`` is when it sent the last renewal that succeeded: the
server set the expiry to its time of execution plus ``ttl_s``, which is
later, so a node stops believing in its lease before the server lets
another node take it.  Safety does not rest on that: an append of a node
that believes wrongly is refused by the token.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import psycopg

log = logging.getLogger("yidi.lease")


@dataclass(frozen=True)
class Holder:
    """Who holds a partition's lease (as read when taking it failed)."""

    owner: str
    address: str
    token: int
    expires_in_s: float


def take(conn: psycopg.Connection, part: int, owner: str, address: str, ttl_s: float) -> int | Holder:
    """The lease with its new token, or who holds it (it has not expired)."""
    with conn.transaction():
        held = _holder(conn, part, "")   # read first: a standby's tries write nothing while the lease is held
        if held is None:
            conn.execute("INSERT INTO leases (part, owner, address, token, expires_at) "
                         "VALUES (%s, '', '', 0, '-infinity') ON CONFLICT DO NOTHING", (part,))
        elif held.expires_in_s > 0:
            return held
        held = _holder(conn, part, "FOR UPDATE")
        if held.expires_in_s > 0:
            return held
        token = held.token
        _end_stale_writers(conn, part, ttl_s)
        (head_token,) = conn.execute("SELECT token FROM head WHERE part = %s FOR UPDATE", (part,)).fetchone()
        new = max(token, head_token) + 1
        conn.execute("UPDATE leases SET owner = %s, address = %s, token = %s, "
                     "expires_at = clock_timestamp() + make_interval(secs => %s) WHERE part = %s",
                     (owner, address, new, ttl_s, part))
        conn.execute("UPDATE head SET token = %s WHERE part = %s", (new, part))
    return new


def _holder(conn: psycopg.Connection, part: int, lock: str) -> Holder | None:
    row = conn.execute("SELECT owner, address, token, CASE WHEN expires_at > clock_timestamp() "
                       "THEN extract(epoch FROM expires_at - clock_timestamp())::float8 ELSE 0 END "
                       f"FROM leases WHERE part = %s {lock}", (part,)).fetchone()
    return None if row is None else Holder(*row)


def writer_name(part: int) -> str:
    """How the application name of a partition's writing sessions begins (the writer's and its lease keeper's)."""
    return f"yidi p{part} writer "


def _end_stale_writers(conn: psycopg.Connection, part: int, wait_s: float) -> None:
    """End the partition's sessions in a transaction that wrote the head table (only its writer does, and the
    lease that let it has expired; other partitions' writers write it too, and go on), waiting for each to go."""
    stale = conn.execute("SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                         "WHERE l.locktype = 'relation' AND l.relation = 'head'::regclass "
                         "AND l.mode = 'RowExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid() "
                         "AND a.application_name LIKE %s", (writer_name(part) + "%",)).fetchall()
    for (pid,) in stale:
        log.warning("ending PostgreSQL session %d: a writer whose lease has expired, still in a transaction", pid)
        conn.execute("SELECT pg_terminate_backend(%s, %s)", (pid, int(wait_s * 1000)))


@dataclass(frozen=True)
class LeaseRow:
    """One partition's lease as the table says now (``yidi status --store``)."""

    part: int
    owner: str
    address: str
    token: int
    expires_in_s: float | None   # by the server's clock; negative once expired; None: released or never held
    expired: bool


def leases(conn: psycopg.Connection) -> list[LeaseRow]:
    """Every partition's lease, by partition."""
    rows = conn.execute("SELECT part, owner, address, token, CASE WHEN isfinite(expires_at) THEN "
                        "extract(epoch FROM expires_at - clock_timestamp())::float8 END, "
                        "expires_at <= clock_timestamp() FROM leases ORDER BY part").fetchall()
    return [LeaseRow(*row) for row in rows]


def renew(conn: psycopg.Connection, part: int, token: int, ttl_s: float) -> bool:
    """False when another node has taken the lease since (a newer token)."""
    return conn.execute("UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => %s) "
                        "WHERE part = %s AND token = %s", (ttl_s, part, token)).rowcount == 1


def release(conn: psycopg.Connection, part: int, token: int) -> None:
    conn.execute("UPDATE leases SET expires_at = '-infinity' WHERE part = %s AND token = %s", (part, token))


class LeaseKeeper:
    """Takes a partition's lease when it is free (a standby), then renews it every ``renew_s`` (the owner).

    ``connect()`` opens the keeper's own autocommit connection (again after it
    was lost).  ``on_taken(token)`` is called from the keeper's thread once
    the lease is taken there.  ``valid()`` (any thread): the lease is ours
    and its time has not run out by our clock.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection], part: int, owner: str, address: str,
                 ttl_s: float, renew_s: float, on_taken: Callable[[int], None] | None = None) -> None:
        self._connect = connect
        self.part, self.owner, self.address = part, owner, address
        self.ttl_s, self.renew_s = ttl_s, renew_s
        self.on_taken = on_taken
        self.token = 0
        self.holder: Holder | None = None   # who held it when taking it last failed
        self.lost = ""                      # why the lease was lost, once it was
        self._deadline = 0.0                # monotonic: ours until then
        self._conn: psycopg.Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def valid(self) -> bool:
        return bool(self.token) and not self.lost and time.monotonic() < self._deadline

    def take_once(self) -> bool:
        """Try to take the lease now (the caller's thread); True when it is ours."""
        sent = time.monotonic()
        got = take(self._connection(), self.part, self.owner, self.address, self.ttl_s)
        if isinstance(got, Holder):
            self.holder = got
            return False
        self.token, self._deadline = got, sent + self.ttl_s
        log.info("took the lease of partition %d (token %d, %.1f s, renewed every %.1f s)", self.part, got,
                 self.ttl_s, self.renew_s)
        return True

    def try_take(self) -> bool:
        """``take_once``, with a server that cannot answer now (restarting, failing over, a lock held by a stalled
        writer) taken as "not yet"."""
        try:
            return self.take_once()
        except psycopg.Error as err:
            self._failed(err)
            return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="yidi-lease", daemon=True)
        self._thread.start()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _run(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                if not self.token:
                    if self.try_take() and self.on_taken is not None:
                        self.on_taken(self.token)
                    continue
                sent = time.monotonic()
                if renew(self._connection(), self.part, self.token, self.ttl_s):
                    self._deadline = sent + self.ttl_s
                    continue
                self.lost = f"another node took the lease of partition {self.part} (token {self.token} is not its own)"
                return
            except psycopg.Error as err:   # the server lost or restarting: try again until the deadline
                self._failed(err)
            if self.token and time.monotonic() >= self._deadline:
                self.lost = f"the lease of partition {self.part} ran out: it could not be renewed in {self.ttl_s} s"
                return

    def _failed(self, err: psycopg.Error) -> None:
        log.warning("lease of partition %d: %s", self.part, str(err).strip().splitlines()[0] if str(err).strip()
                    else type(err).__name__)
        self._close_conn()

    def close(self) -> None:
        """Stop; give the lease up if it is still ours (after the owner's last commit)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.valid():
            try:
                release(self._connection(), self.part, self.token)
                log.info("gave up the lease of partition %d (token %d)", self.part, self.token)
            except psycopg.Error as err:
                log.warning("lease of partition %d not given up (%s); it ends by itself", self.part, err)
        self.token = 0
        self._close_conn()

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
