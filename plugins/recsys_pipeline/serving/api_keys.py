"""API keys for the shop's backend: created once, shown once, stored only as a hash.

A key is 32 random bytes, so its SHA-256 is enough to store (no slow hash needed: there is
nothing to guess). The service keeps the active hashes in memory, refreshed from MySQL
every few seconds, so a revoked key stops working quickly and an unreachable MySQL does
not lock the shop's backend out.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from dataclasses import dataclass

import MySQLdb

from recsys_pipeline import warehouse
from recsys_pipeline.settings import MySQLSettings

log = logging.getLogger(__name__)

TABLE = "serving_api_keys"
HEADER = "X-API-Key"
_PREFIX = "rsk"


def create_table(conn) -> None:
    conn.cursor().execute(
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
            key_id CHAR(12) NOT NULL PRIMARY KEY COMMENT 'public part of the key, shown in listings',
            name VARCHAR(128) NOT NULL COMMENT 'who the key is for',
            key_sha256 CHAR(64) NOT NULL UNIQUE,
            created_at DATETIME NOT NULL DEFAULT UTC_TIMESTAMP(),
            revoked_at DATETIME NULL
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
    )
    conn.commit()


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    name: str
    key: str  # shown once; never stored


def create_key(settings: MySQLSettings, name: str) -> CreatedKey:
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError("an API key needs a name of 1 to 128 characters (who or what uses it)")
    key_id = secrets.token_hex(6)
    key = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    with warehouse.connect(settings) as conn:
        create_table(conn)
        conn.cursor().execute(
            f"INSERT INTO {TABLE} (key_id, name, key_sha256) VALUES (%s, %s, %s)", (key_id, name, digest(key))
        )
        conn.commit()
    return CreatedKey(key_id, name, key)


def revoke_key(settings: MySQLSettings, key_id: str) -> bool:
    with warehouse.connect(settings) as conn:
        create_table(conn)
        cur = conn.cursor()
        cur.execute(
            f"UPDATE {TABLE} SET revoked_at = UTC_TIMESTAMP() WHERE key_id = %s AND revoked_at IS NULL", (key_id,)
        )
        conn.commit()
        return cur.rowcount == 1


def list_keys(settings: MySQLSettings) -> list[dict]:
    with warehouse.connect(settings) as conn:
        create_table(conn)
        frame = warehouse.read_frame(
            conn, f"SELECT key_id, name, created_at, revoked_at FROM {TABLE} ORDER BY created_at"
        )
    return frame.to_dict("records")


class ApiKeyCheck:
    """Is this key active? Answered from memory; the set is refreshed from MySQL in the background."""

    def __init__(self, settings: MySQLSettings, refresh_seconds: float = 10.0):
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self._hashes: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh_loop, name="api-key-refresh", daemon=True)

    def start(self) -> ApiKeyCheck:
        try:
            with warehouse.connect(self.settings) as conn:
                create_table(conn)
        except MySQLdb.Error as error:
            log.warning("could not create %s (%s): no key is valid until it exists", TABLE, error)
        self.refresh()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> None:
        try:
            with warehouse.connect(self.settings) as conn:
                cur = conn.cursor()
                cur.execute(f"SELECT key_sha256 FROM {TABLE} WHERE revoked_at IS NULL")
                self._hashes = frozenset(row[0] for row in cur.fetchall())
        except MySQLdb.Error as error:  # keep the last known keys: the shop's backend stays in
            log.warning("could not refresh API keys from MySQL (%s); keeping %d known keys", error, len(self._hashes))

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    def is_valid(self, key: str | None) -> bool:
        if not key or len(key) > 128:
            return False
        return digest(key) in self._hashes  # a digest of the attempt: its timing tells nothing about a key

    def __len__(self) -> int:
        return len(self._hashes)
