"""The PostgreSQL backend of the store (psycopg 3): every part of gateway/store/parts.py in one database.

``store.PostgresStore`` (imported by ``open_store`` only when a
``postgresql://`` URL is given, so a SQLite gateway never loads psycopg);
``schema.py`` its tables.  How to run it, the schema and the driver choice:
docs/postgresql.md.
"""
from __future__ import annotations

import urllib.parse


def safe_url(url: str) -> str:
    """The URL without its password (what names the ledger in logs and messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
