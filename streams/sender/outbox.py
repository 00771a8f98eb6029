"""The sender's durable memory (SQLite): which triggers were handled, what was sent, locales.

One file, written by the one sender process; the dashboard reads it from another (SQLite allows
that, unlike the embedded ClickHouse). WAL mode, so a reader never blocks the sender.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from streams.sender.render import Email

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sent (
    trigger_id   TEXT PRIMARY KEY,
    trigger_type TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    locale       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    body         TEXT NOT NULL,
    status       TEXT NOT NULL,          -- DELIVERED or BOUNCED
    detail       TEXT NOT NULL DEFAULT '',
    sent_at      INTEGER NOT NULL,       -- journey clock, epoch ms
    reported     INTEGER NOT NULL DEFAULT 0  -- engagement acknowledged by Kafka
);
CREATE INDEX IF NOT EXISTS sent_by_time ON sent (sent_at);
CREATE TABLE IF NOT EXISTS locales (customer_id TEXT PRIMARY KEY, locale TEXT NOT NULL);
"""


@dataclass(frozen=True)
class SentEmail(Email):
    """A rendered email and what became of it."""

    status: str
    detail: str
    sent_at: int
    reported: bool


def outbox_path(data_dir: Path) -> Path:
    return data_dir / "sender" / "outbox.sqlite"


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def get(self, trigger_id: str) -> SentEmail | None:
        row = self.db.execute("SELECT * FROM sent WHERE trigger_id = ?", (trigger_id,)).fetchone()
        return _sent(row) if row else None

    def record(self, email: Email, status: str, detail: str, sent_at: int) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            (
                email.trigger_id, email.trigger_type, email.customer_id, email.recipient,
                email.locale, email.subject, email.body, status, detail, sent_at,
            ),
        )  # fmt: skip

    def mark_reported(self, trigger_id: str) -> None:
        self.db.execute("UPDATE sent SET reported = 1 WHERE trigger_id = ?", (trigger_id,))

    def set_locale(self, customer_id: str, locale: str | None) -> None:
        if locale:
            self.db.execute("INSERT OR REPLACE INTO locales VALUES (?, ?)", (customer_id, locale))
        else:
            self.db.execute("DELETE FROM locales WHERE customer_id = ?", (customer_id,))

    def locale(self, customer_id: str) -> str | None:
        row = self.db.execute(
            "SELECT locale FROM locales WHERE customer_id = ?", (customer_id,)
        ).fetchone()
        return str(row[0]) if row else None

    def forget_customer(self, customer_id: str) -> None:
        """Erasure: the customer's rendered emails and locale go (trigger ids stay, without
        content, so that a redelivered trigger is still recognised)."""
        self.db.execute(
            "UPDATE sent SET recipient = '', subject = '', body = '' WHERE customer_id = ?",
            (customer_id,),
        )
        self.db.execute("DELETE FROM locales WHERE customer_id = ?", (customer_id,))

    def close(self) -> None:
        self.db.close()


def latest_emails(path: Path, limit: int = 10) -> list[SentEmail]:
    """The most recently sent emails, newest first (for the dashboard; empty if none yet)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT * FROM sent WHERE body != '' ORDER BY sent_at DESC, rowid DESC LIMIT ?",
            (limit,),
        ).fetchall()
    except sqlite3.OperationalError:  # created but not initialised yet
        return []
    finally:
        db.close()
    return [_sent(row) for row in rows]


def _sent(row: tuple[object, ...]) -> SentEmail:
    return SentEmail(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), str(row[5]),
        str(row[6]), str(row[7]), str(row[8]), int(row[9]), bool(row[10]),  # type: ignore[call-overload]
    )  # fmt: skip
