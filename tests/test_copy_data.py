"""``storage.copy_data.binary_copy`` writes exactly the bytes psycopg's COPY formatter writes
(and ``encode_copy``, which uses that formatter when psycopg has it, the same).

The reference is psycopg's own binary COPY path (``Copy.set_types`` then
``write_row``), run through its formatter without a connection; ``jsonb`` is
given to it as JSON text through psycopg's own jsonb dumper (``set_json_dumps``
with the text passed through). For arbitrary rows of the market tables' column
types -- NULLs, NaN, infinities, -0.0, any unicode, any time zone, the int64
extremes -- the payloads must be equal byte for byte. That a payload is also
what PostgreSQL stores is tested end to end in tests/test_flusher.py
(``test_copied_rows_equal_the_rows_the_upserts_write``).
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg._copy_base import BinaryFormatter  # the reference: psycopg's own formatter
from psycopg.adapt import AdaptersMap, Transformer
from psycopg.types.json import set_json_dumps

from availability.storage.batch import _COPY_TYPES
from availability.storage.copy_data import binary_copy, encode_copy

KINDS = ["bigint", "text", "float8", "timestamptz", "jsonb"]
zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=1)), timezone(timedelta(hours=-9, minutes=-30))])
values = {
    "bigint": st.integers(-(2 ** 63), 2 ** 63 - 1),
    "text": st.text(st.characters(blacklist_categories=("Cs",))),
    "float8": st.floats(),
    "timestamptz": st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones),
    "jsonb": st.text(st.characters(blacklist_categories=("Cs",))),
}


def reference(rows: list[tuple], kinds: list[str]) -> bytes:
    adapters = AdaptersMap(psycopg.postgres.adapters)
    set_json_dumps(lambda text: text, adapters)  # the JSON text as it is

    class Context:
        connection = None

    context = Context()
    context.adapters = adapters  # type: ignore[attr-defined]
    transformer = Transformer(context)  # type: ignore[arg-type]
    transformer.set_dumper_types([adapters.types[k].oid for k in kinds], psycopg.pq.Format.BINARY)
    formatter = BinaryFormatter(transformer)
    out = b"".join(bytes(formatter.write_row(row)) for row in rows)
    return out + bytes(formatter.end())


@st.composite
def tables(draw) -> tuple[list[str], list[tuple]]:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6))
    rows = draw(st.lists(st.tuples(*(st.one_of(st.none(), values[k]) for k in kinds)), max_size=6))
    return kinds, rows


@settings(max_examples=500, deadline=None)
@given(tables())
def test_binary_copy_is_psycopgs_binary_copy(table) -> None:
    kinds, rows = table
    assert binary_copy(rows, kinds) == reference(rows, kinds) == encode_copy(rows, kinds)


@pytest.mark.parametrize("competitor", [False, True])
def test_the_market_tables_rows_are_psycopgs_too(competitor: bool) -> None:
    at = datetime(2026, 11, 28, 12, 0, 0, 123456, tzinfo=timezone.utc)
    row = (7000001, "18", 2.5, "Total", "total", 2.5, -2.5, '[{"name":"Over","odds":1.85,"is_active":true}]',
           '["main"]', at, None, at, None)
    rows = [(("sportybet",) + row) if competitor else row, ((None,) if competitor else ()) + row]
    kinds = _COPY_TYPES[competitor]
    assert binary_copy(rows, kinds) == reference(rows, kinds) == encode_copy(rows, kinds)


def test_no_rows_is_signature_and_trailer_and_a_bad_value_raises() -> None:
    assert binary_copy([], ["text"]) == reference([], ["text"])
    for row, kinds in ((("x",), ["bigint"]), ((2 ** 63,), ["bigint"]), (("\ud800",), ["text"]),
                       ((datetime(2026, 1, 1),), ["timestamptz"]), ((1, 2), ["bigint"])):
        with pytest.raises((struct.error, TypeError, ValueError, UnicodeError)):
            binary_copy([row], kinds)
