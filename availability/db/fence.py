"""The warm-up fence: every statement on ``availability_fences`` (revision 0003).

``availability warm`` bumps its prefix's generation (:data:`BUMP_SQL`, a row
lock) before it reads PostgreSQL. A flusher reads the generation
(:data:`READ_SQL`) before every read from Redis and, in the transaction that
writes a batch, checks it under a share lock (:data:`CHECK_SQL`): a batch read
before a warm-up can never commit after it.
"""

from __future__ import annotations

__all__ = ["ENSURE_SQL", "READ_SQL", "CHECK_SQL", "BUMP_SQL"]

ENSURE_SQL = "INSERT INTO availability_fences (prefix) VALUES (%s) ON CONFLICT DO NOTHING"
READ_SQL = "SELECT generation FROM availability_fences WHERE prefix = %s"
CHECK_SQL = "SELECT generation FROM availability_fences WHERE prefix = %s FOR SHARE"
# creates the row if needed; the row lock waits for flusher commits holding the share lock
BUMP_SQL = """
INSERT INTO availability_fences AS f (prefix, generation) VALUES (%s, 1)
ON CONFLICT (prefix) DO UPDATE SET generation = f.generation + 1, updated_at = now()
RETURNING generation
"""
