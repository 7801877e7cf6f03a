"""Resumable MEDU: an sqlite cache of finished LLM work.

Rows are keyed by ``sha256(model, prompt id, document hash, benchmark + description hash, mode and
decoding settings)``; see :func:`rating_key`. Each batch is committed in one transaction, so a crash
loses at most the batch in flight, and a re-run asks the backend only for keys that are missing.
Failed requests (``error`` set) are never stored: they are retried on the next run. Unparseable
answers *are* stored: asking again with the same seed would give the same answer.

sqlite rather than append-only JSONL: atomic commits, no torn last line after a kill, and key
lookups without reading the whole file. The file lives outside the stage's output folder (it must
survive the atomic replacement of that folder).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    subject TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""


def text_hash(text: str) -> str:
    """sha256 hex of UTF-8 text (documents, descriptions, example chunks)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rating_key(*, kind: str, model: str, prompt: str, subject: str, benchmark: str, extra: Any = None) -> str:
    """Cache key: model id, prompt id (version + template hash), the hash of what is rated (a
    document, a chunk of examples, a pair of descriptions), the benchmark (with its description
    hash) and whatever else changes the answer (mode, decoding settings, truncation)."""
    payload = json.dumps([kind, model, prompt, subject, benchmark, extra], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResultCache:
    """A key -> JSON value store in one sqlite file (``path=None``: in memory)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL" if self.path is not None else "PRAGMA journal_mode=MEMORY")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """``{key: value}`` for the keys present."""
        out: dict[str, Any] = {}
        with self._lock:
            for lo in range(0, len(keys), 500):
                chunk = list(keys[lo:lo + 500])
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", chunk):
                    out[key] = json.loads(value)
        return out

    def put_many(self, rows: Iterable[tuple[str, dict[str, Any], Any]]) -> int:
        """Store ``(key, meta, value)`` rows in one transaction; meta has kind/model/prompt/subject/benchmark."""
        data = [(k, m["kind"], m["model"], m["prompt"], m["subject"], m["benchmark"],
                 json.dumps(v, allow_nan=False)) for k, m, v in rows]
        with self._lock, self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO results (key, kind, model, prompt, subject, benchmark, value) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", data)
        return len(data)

    def count(self, kind: str | None = None) -> int:
        with self._lock:
            sql, args = ("SELECT COUNT(*) FROM results", ()) if kind is None else \
                ("SELECT COUNT(*) FROM results WHERE kind = ?", (kind,))
            return int(self._db.execute(sql, args).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
