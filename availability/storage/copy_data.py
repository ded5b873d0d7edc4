"""PostgreSQL's binary COPY format, written ahead of the COPY itself.

:func:`binary_copy` turns rows into one ``COPY ... FROM STDIN (FORMAT BINARY)``
payload (signature, header, the rows, trailer: "Binary Format" in PostgreSQL's
``COPY`` documentation), in plain Python, with no connection. The flusher
builds a batch's payload in its worker thread while the previous batch is
written; the write is then a few big ``copy.write`` calls, with no per-row
work on the event loop.

Only the column types of the market tables are known: ``bigint``, ``text``,
``float8``, ``timestamptz`` and ``jsonb`` (given as JSON text, sent as
version 1 followed by the text). ``tests/test_copy_data.py`` proves each
equal, byte for byte, to what psycopg's own COPY formatter sends for the same
values.
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

__all__ = ["binary_copy", "SIGNATURE", "TRAILER"]

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)  # no OIDs, no header extension
TRAILER = struct.pack("!h", -1)
_NULL = struct.pack("!i", -1)
_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)  # PostgreSQL's timestamp epoch

_int8 = struct.Struct("!iq").pack
_float8 = struct.Struct("!id").pack
_length = struct.Struct("!i").pack


def _bigint(value: int) -> bytes:
    return _int8(8, value)


def _float(value: float) -> bytes:
    return _float8(8, value)


def _text(value: str) -> bytes:
    data = value.encode()
    return _length(len(data)) + data


def _jsonb(value: str) -> bytes:
    data = value.encode()
    return _length(len(data) + 1) + b"\x01" + data


def _timestamptz(value: datetime) -> bytes:
    delta = value - _EPOCH  # refuses a naive datetime
    return _int8(8, (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    "bigint": _bigint,
    "text": _text,
    "float8": _float,
    "timestamptz": _timestamptz,
    "jsonb": _jsonb,
}


def binary_copy(rows: Iterable[Sequence[Any]], kinds: Sequence[str]) -> bytes:
    """One binary COPY payload of ``rows``, whose columns have the types ``kinds``
    (``None`` is NULL). Raises on a value its column cannot hold."""
    encoders = [_ENCODERS[kind] for kind in kinds]
    count = struct.pack("!h", len(kinds))
    times: dict[datetime, bytes] = {}  # a batch's rows share a few hundred scrape times
    parts = [SIGNATURE]
    append = parts.append
    for row in rows:
        if len(row) != len(encoders):
            raise ValueError(f"binary_copy: expected {len(encoders)} columns, got {len(row)}")
        append(count)
        for encode, value in zip(encoders, row):
            if value is None:
                append(_NULL)
            elif encode is _timestamptz:
                data = times.get(value)
                if data is None:
                    data = times[value] = _timestamptz(value)
                append(data)
            else:
                append(encode(value))
    append(TRAILER)
    return b"".join(parts)


# psycopg's own binary COPY formatter (C) makes the same bytes ~3x faster; its module is
# not public API, so a psycopg without it leaves binary_copy to do the work.
try:
    import psycopg
    from psycopg._copy_base import BinaryFormatter as _Formatter
    from psycopg.adapt import AdaptersMap, Transformer
    from psycopg.types.json import set_json_dumps
except ImportError:  # pragma: no cover - another psycopg layout
    _Formatter = None


class _Context:
    """What psycopg's Transformer needs: adapters (jsonb given as JSON text), no connection."""

    connection = None

    def __init__(self) -> None:
        self.adapters = AdaptersMap(psycopg.postgres.adapters)
        set_json_dumps(lambda text: text, self.adapters)  # our JSON text, as it is


def encode_copy(rows: Sequence[Sequence[Any]], kinds: Sequence[str]) -> bytes:
    """:func:`binary_copy`'s payload, made by psycopg's formatter when it can be."""
    if _Formatter is None:
        return binary_copy(rows, kinds)
    context = _Context()
    transformer = Transformer(context)  # type: ignore[arg-type]
    transformer.set_dumper_types([context.adapters.types[k].oid for k in kinds], psycopg.pq.Format.BINARY)
    formatter = _Formatter(transformer)
    parts = [bytes(formatter.write_row(row)) for row in rows]
    parts.append(bytes(formatter.end()))
    return b"".join(parts)
