"""The warm-up fence on ``availability_fences`` (revision 0003): ``availability warm``
bumps its prefix's generation before it reads PostgreSQL; a flusher checks it, under a
share lock, in the transaction that writes a batch."""

from __future__ import annotations


import psycopg
import psycopg.rows


# ---------------------------------------------------------------- the warm-up fence (revision 0003)

FENCE_ENSURE_SQL = "INSERT INTO availability_fences (prefix) VALUES (%s) ON CONFLICT DO NOTHING"
FENCE_READ_SQL = "SELECT generation FROM availability_fences WHERE prefix = %s"
FENCE_CHECK_SQL = "SELECT generation FROM availability_fences WHERE prefix = %s FOR SHARE"
# creates the row if needed; the row lock waits for flusher commits holding the share lock
FENCE_BUMP_SQL = """
INSERT INTO availability_fences AS f (prefix, generation) VALUES (%s, 1)
ON CONFLICT (prefix) DO UPDATE SET generation = f.generation + 1, updated_at = now()
RETURNING generation
"""


class Fenced(Exception):
    """``availability warm`` reloaded Redis from PostgreSQL after this batch was read:
    committing it now could undo what warm-up loaded, so the batch is not written."""


async def read_generation(conn: psycopg.AsyncConnection, prefix: str, *, ensure: bool) -> int:
    """The prefix's warm-up generation (0 before the first warm-up); ``ensure``
    creates its row first."""
    if ensure:
        await conn.execute(FENCE_ENSURE_SQL, (prefix,))
    cur = await conn.execute(FENCE_READ_SQL, (prefix,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def bump_generation(conn: psycopg.AsyncConnection, prefix: str) -> int:
    """Fence out every flusher batch read before now; returns the new generation.
    The caller commits."""
    cur = await conn.execute(FENCE_BUMP_SQL, (prefix,))
    return int((await cur.fetchone())[0])  # type: ignore[index]
