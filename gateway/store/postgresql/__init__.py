"""The PostgreSQL backend of the store (psycopg 3): every part of gateway/store/parts.py in one database.

``store.PostgresStore`` (imported by ``open_store`` only when a
``postgresql://`` URL is given, so a SQLite gateway never loads psycopg);
``schema.py`` its tables.  How to run it, the schema and the driver choice:
docs/postgresql.md.
"""
from __future__ import annotations

import urllib.parse


def log_reads(conn, path: str, key=None, part: int = 0):
    """The log's reads (gateway/store/packed.py: scan, read, chain_at ...) on a psycopg connection of the caller's:
    one consistent view (verify-ledger), or a tool's look at the records; ``key`` is needed by ``chain_at(0)`` and
    ``read`` only."""
    from ..packed import reads_of

    return reads_of(lambda sql, args: conn.execute(sql.replace("?", "%s"), args).fetchall(), key, path, part)


def scan_every_partition(conn, path: str, key=None):
    """Every partition's records in seq order (partition 0's first: core/partition.py), for a tool's or a test's
    look at the whole ledger."""
    for (part,) in conn.execute("SELECT part FROM head ORDER BY part").fetchall():
        yield from log_reads(conn, path, key, part).scan()


def safe_url(url: str) -> str:
    """The URL without its password (what names the ledger in logs and messages): the userinfo's password and a
    ``password`` query parameter are dropped; every host of a multi-host URL stays."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}@{hosts}" if at else parts.netloc
    query = urllib.parse.urlencode([(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                                    if k != "password"])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
