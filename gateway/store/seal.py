"""The seal key: the secret the ledger's disk does not hold.

A hash chain that lives on the disk it protects can be recomputed by whoever
can write that disk.  So every proof the ledger keeps is a MAC (keyed
BLAKE2b) with a key read from a file outside the data directory
(``--seal-key FILE``; ``yidi keys --out FILE`` makes a development one):

* each record's chain value (gateway/store/chain.py),
* the ledger's head row and head file, and the witness's copy of the head,
* a tag on every derived row (the idempotency index, the archive's tables,
  the reconciliation projection, problem reports; gateway/store/rows.py),
* each snapshot file (gateway/store/snapshot.py).

Each ledger has its own key, derived from the seal key and the ledger's id
(a random id made when the ledger is created and bound into its head), so
rows and records cannot be moved from one ledger into another sealed with
the same key.  The key file holds 64 hexadecimal characters (32 bytes); the
key itself never appears in a log or a message, only its id (a fingerprint).
"""
from __future__ import annotations

import hashlib
import os
import secrets
import stat

import msgspec

from core import GroupPacker

KEY_BYTES = 32
CHAIN_BYTES = 32
TAG_BYTES = 16

_encode = msgspec.msgpack.Encoder().encode


class SealKeyError(Exception):
    """The seal key cannot be used: one sentence for the operator."""


class SealKey:
    """The deployment's secret (from ``--seal-key``)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise SealKeyError(f"a seal key is {KEY_BYTES} bytes")
        self._secret = secret
        self.key_id = hashlib.blake2b(secret, digest_size=8, person=b"yidi-key-id").hexdigest()

    def __repr__(self) -> str:   # never the secret
        return f"SealKey(id={self.key_id})"

    @classmethod
    def read(cls, path: str) -> SealKey:
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except FileNotFoundError:
            raise SealKeyError(f"no seal key at {path}: make one with `yidi keys --out {path}` (production: keep it "
                               "outside the data directory, readable by the gateway only)") from None
        except (OSError, UnicodeDecodeError) as err:
            raise SealKeyError(f"cannot read the seal key {path}: {err}") from None
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            secret = b""
        if len(secret) != KEY_BYTES:
            raise SealKeyError(f"the seal key {path} must hold {2 * KEY_BYTES} hexadecimal characters")
        return cls(secret)

    def for_ledger(self, ledger_id: str) -> LedgerKey:
        return LedgerKey(hashlib.blake2b(b"yidi ledger " + ledger_id.encode(), key=self._secret,
                                         digest_size=KEY_BYTES).digest(), ledger_id, self.key_id)


def check_outside(key_path: str, ledger_path: str) -> None:
    """The key must not live in the ledger's own directory: a disk that holds its key proves nothing."""
    key_dir = os.path.dirname(os.path.realpath(key_path))
    ledger_dir = os.path.dirname(os.path.realpath(ledger_path))
    if key_dir == ledger_dir or key_dir.startswith(ledger_dir + os.sep):
        raise SealKeyError(f"the seal key {key_path} is inside the ledger's directory {ledger_dir}: keep it on "
                           "another volume or a secrets mount, so that whoever can write the ledger cannot reseal it")


def write_key(path: str) -> SealKey:
    """A new random seal key in a new file readable by its owner only (never overwrites)."""
    secret = secrets.token_bytes(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secret.hex() + "\n")
    return SealKey(secret)


class LedgerKey:
    """One ledger's key: every MAC of that ledger."""

    __slots__ = ("_key", "ledger_id", "key_id", "genesis", "_packer")

    def __init__(self, key: bytes, ledger_id: str, key_id: str) -> None:
        self._key = key
        self.ledger_id = ledger_id
        self.key_id = key_id
        # The chain value before record 1: this ledger's own starting point.
        self.genesis = self.mac(b"genesis", CHAIN_BYTES)
        self._packer: GroupPacker | None = None

    def __repr__(self) -> str:
        return f"LedgerKey(ledger={self.ledger_id}, key={self.key_id})"

    def mac(self, data: bytes, size: int = CHAIN_BYTES) -> bytes:
        return hashlib.blake2b(data, key=self._key, digest_size=size).digest()

    def link(self, previous: bytes, checksum: bytes) -> bytes:
        """A record's chain value: its checksum bound to every record before it."""
        return hashlib.blake2b(previous + checksum, key=self._key, digest_size=CHAIN_BYTES).digest()

    def packer(self) -> GroupPacker:
        """This ledger's commit groups packed, chained and tagged in C (core/ledger.pxi), with these MACs."""
        if self._packer is None:
            self._packer = GroupPacker(self._key, self.tag)
        return self._packer

    def tag(self, table: str, values: tuple) -> bytes:
        """A derived row's tag: its table and values, so a changed or invented row is known when read."""
        return hashlib.blake2b(_encode((table, values)), key=self._key, digest_size=TAG_BYTES).digest()
