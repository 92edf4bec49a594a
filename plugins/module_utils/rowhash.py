# -*- coding: utf-8 -*-
# Copyright: (c) 2026, stateful.rollback contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Server-side row hashing over key ranges.

A row's hash is ``hashtextextended(ROW(<common columns>)::text, 0)``, computed
by the server under the canonical session settings of postgres.connect(), so
only aggregates travel over the wire. A chunk is a half-open key range
``[lo, hi)`` (either end may be open); one scan assigns every row to its chunk
with ``width_bucket(key, ARRAY[boundaries])`` and returns per chunk the row
count and the sum of row hashes (a multiset hash: order-free, and duplicates
count).

All SQL is composed with psycopg2.sql: identifiers through Identifier, type
names through Identifier on the catalog's (schema, type) pair, values as bound
parameters.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.stateful.rollback.plugins.module_utils.postgres import (
    fetch_all,
    fetch_all_with,
    sql,
)

# The planner estimates one group per row for a computed chunk index (it
# cannot know there are only a few hundred) and then prefers sorting the
# whole table, spilling to disk, over a hash aggregate that fits in a few
# kilobytes. Chunk scans therefore run with sorting discouraged.
CHUNK_SCAN_SETTINGS = (("enable_sort", "off"),)


class Range(object):
    """Half-open key range [lo, hi); keys are tuples of text values."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo=None, hi=None):
        self.lo = lo
        self.hi = hi

    def __eq__(self, other):
        return isinstance(other, Range) and (self.lo, self.hi) == (other.lo, other.hi)

    def __hash__(self):
        return hash((self.lo, self.hi))

    def __repr__(self):
        return "Range(%r, %r)" % (self.lo, self.hi)

    def as_dict(self, key_columns):
        """{"from": key, "to": key} with keys as column-value dicts (None: open end)."""
        return {
            "from": None if self.lo is None else key_dict(key_columns, self.lo),
            "to": None if self.hi is None else key_dict(key_columns, self.hi),
        }


def key_dict(key_columns, key):
    """A key tuple (text values) as {column: value}, integers as numbers."""
    out = {}
    for col, value in zip(key_columns, key):
        out[col.name] = int(value) if col.is_integer and value is not None else value
    return out


def chunk_ranges(boundaries):
    """Ranges of the width_bucket chunks 0..len(boundaries) in order."""
    edges = [None] + list(boundaries) + [None]
    return [Range(edges[i], edges[i + 1]) for i in range(len(boundaries) + 1)]


def _typed(column):
    """``%s::"schema"."type"`` - a bound value cast to the column's base type."""
    return sql.SQL("%s::{}").format(sql.Identifier(column.type_schema, column.type_name))


def key_expr(table):
    cols = [sql.Identifier(c.name) for c in table.key]
    if len(cols) == 1:
        return cols[0]
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(cols))


def key_value_expr(table):
    vals = [_typed(c) for c in table.key]
    if len(vals) == 1:
        return vals[0]
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(vals))


def key_text_exprs(table):
    return sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in table.key)


def row_hash_expr(columns):
    """hashtextextended over the text of the row built from ``columns``."""
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    return sql.SQL("hashtextextended(ROW({})::text, 0)").format(cols)


def range_predicate(table, rng):
    """(SQL, params) restricting rows to ``rng``; TRUE for an open range."""
    parts, params = [], []
    if rng.lo is not None:
        parts.append(sql.SQL("{} >= {}").format(key_expr(table), key_value_expr(table)))
        params.extend(rng.lo)
    if rng.hi is not None:
        parts.append(sql.SQL("{} < {}").format(key_expr(table), key_value_expr(table)))
        params.extend(rng.hi)
    if not parts:
        return sql.SQL("TRUE"), []
    return sql.SQL(" AND ").join(parts), params


def _arithmetic_step(table, boundaries):
    """The common step of evenly spaced boundaries of a single integer key, else None."""
    if len(table.key) != 1 or not table.key[0].is_integer or len(boundaries) < 2:
        return None
    try:
        points = [int(b[0]) for b in boundaries]
    except (TypeError, ValueError):
        return None
    step = points[1] - points[0]
    if step <= 0 or any(b - a != step for a, b in zip(points, points[1:])):
        return None
    return points[0], points[-1], step


def _bucket_expr(table, boundaries):
    """SQL giving each row its chunk index: width_bucket(key, boundaries) semantics.

    Evenly spaced boundaries of an integer key (the usual case) are computed
    arithmetically, which costs a fraction of width_bucket's binary search;
    the subtraction only happens between the first and last boundary, so it
    cannot overflow.
    """
    if not boundaries:
        return sql.SQL("0"), []
    arithmetic = _arithmetic_step(table, boundaries)
    if arithmetic:
        first, last, step = arithmetic
        col = sql.Identifier(table.key[0].name)
        expr = sql.SQL(
            "CASE WHEN {k} < %s::int8 THEN 0 WHEN {k} >= %s::int8 THEN %s::int "
            "ELSE (({k} - %s::int8) / %s::int8)::int + 1 END"
        ).format(k=col)
        return expr, [first, last, len(boundaries), first, step]
    element = key_value_expr(table)
    array = sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join([element] * len(boundaries)))
    params = [v for b in boundaries for v in b]
    return sql.SQL("width_bucket({}, {})").format(key_expr(table), array), params


def chunk_hashes(conn, table, columns, boundaries, rng=None):
    """{chunk index: (rows, hash sum)} for the chunks cut by ``boundaries``.

    Chunks without rows are absent. ``rng`` restricts the scan (sub-ranges
    during bisection); its boundaries must lie inside it.
    """
    bucket, bucket_params = _bucket_expr(table, boundaries)
    where, where_params = range_predicate(table, rng or Range())
    query = sql.SQL(
        "SELECT {bucket} AS chunk, count(*), coalesce(sum({hash}), 0)::text "
        "FROM {table} WHERE {where} GROUP BY 1"
    ).format(
        bucket=bucket,
        hash=row_hash_expr(columns),
        table=sql.Identifier(table.schema, table.name),
        where=where,
    )
    rows = fetch_all_with(conn, CHUNK_SCAN_SETTINGS, query, bucket_params + where_params)
    return dict((int(r[0]), (int(r[1]), r[2])) for r in rows)


def table_hash(conn, table, columns):
    """(rows, hash sum) of a whole table: the comparison for keyless tables."""
    query = sql.SQL("SELECT count(*), coalesce(sum({hash}), 0)::text FROM {table}").format(
        hash=row_hash_expr(columns), table=sql.Identifier(table.schema, table.name)
    )
    rows, total = fetch_all(conn, query)[0]
    return int(rows), total


def range_hashes(conn, table, columns, ranges):
    """[(rows, hash sum)] for each range, in one round trip."""
    if not ranges:
        return []
    selects, params = [], []
    for i, rng in enumerate(ranges):
        where, where_params = range_predicate(table, rng)
        selects.append(
            sql.SQL("SELECT {i}::int, count(*), coalesce(sum({hash}), 0)::text FROM {table} WHERE {where}").format(
                i=sql.Literal(i),
                hash=row_hash_expr(columns),
                table=sql.Identifier(table.schema, table.name),
                where=where,
            )
        )
        params.extend(where_params)
    rows = fetch_all(conn, sql.SQL(" UNION ALL ").join(selects), params)
    result = [None] * len(ranges)
    for i, count, total in rows:
        result[i] = (int(count), total)
    return result


def row_hashes(conn, table, columns, rng):
    """{key tuple: row hash} of every row in ``rng`` (the leaves of bisection)."""
    where, params = range_predicate(table, rng)
    query = sql.SQL("SELECT {keys}, {hash} FROM {table} WHERE {where}").format(
        keys=key_text_exprs(table),
        hash=row_hash_expr(columns),
        table=sql.Identifier(table.schema, table.name),
        where=where,
    )
    n = len(table.key)
    return dict((tuple(r[:n]), r[n]) for r in fetch_all(conn, query, params))


def row_hashes_by_chunk(conn, table, columns, boundaries):
    """{chunk index: {key tuple: row hash}} of the whole table in one scan."""
    bucket, params = _bucket_expr(table, boundaries)
    query = sql.SQL("SELECT {bucket}, {keys}, {hash} FROM {table}").format(
        bucket=bucket,
        keys=key_text_exprs(table),
        hash=row_hash_expr(columns),
        table=sql.Identifier(table.schema, table.name),
    )
    n = len(table.key)
    out = {}
    for r in fetch_all(conn, query, params):
        out.setdefault(int(r[0]), {})[tuple(r[1:n + 1])] = r[n + 1]
    return out


def rows_by_key(conn, table, columns, keys):
    """{key: row hash} for the given keys (confirmation of leaf differences)."""
    if not keys:
        return {}
    n = len(table.key)
    matches = sql.SQL(" OR ").join(
        [sql.SQL("({} = {})").format(key_expr(table), key_value_expr(table))] * len(keys)
    )
    query = sql.SQL("SELECT {keys}, {hash} FROM {table} WHERE {matches}").format(
        keys=key_text_exprs(table),
        hash=row_hash_expr(columns),
        table=sql.Identifier(table.schema, table.name),
        matches=matches,
    )
    params = [v for k in keys for v in k]
    return dict((tuple(r[:n]), r[n]) for r in fetch_all(conn, query, params))


def _ordered_by_key(table, alias):
    """ORDER BY list naming the key columns of ``alias`` (not the text outputs)."""
    return sql.SQL(", ").join(sql.Identifier(alias, c.name) for c in table.key)


def split_points(conn, table, rng, parts):
    """Keys cutting the rows of ``rng`` into about ``parts`` equal pieces.

    A single integer key is cut arithmetically over the range's key span (an
    open end costs one index probe); each cut shrinks the span ``parts``-fold,
    so bisection ends within log(span) steps however the keys are spread.
    Other keys are cut at every n-th row of the range, in key order.
    """
    where, params = range_predicate(table, rng)
    if len(table.key) == 1 and table.key[0].is_integer:
        return _integer_split_points(conn, table, rng, parts, where, params)
    query = sql.SQL(
        "SELECT {keys} FROM (SELECT {cols}, row_number() OVER (ORDER BY {inner}) AS rn, "
        "count(*) OVER () AS total FROM {table} WHERE {where}) src "
        "WHERE rn > 1 AND (rn - 1) %% greatest(total / %s, 1) = 0 ORDER BY {outer}"
    ).format(
        keys=key_text_exprs(table),
        cols=sql.SQL(", ").join(sql.Identifier(c.name) for c in table.key),
        inner=sql.SQL(", ").join(sql.Identifier(c.name) for c in table.key),
        outer=_ordered_by_key(table, "src"),
        table=sql.Identifier(table.schema, table.name),
        where=where,
    )
    return [tuple(r) for r in fetch_all(conn, query, params + [parts])]


def _integer_split_points(conn, table, rng, parts, where, params):
    lo = None if rng.lo is None else int(rng.lo[0])
    hi = None if rng.hi is None else int(rng.hi[0])
    if lo is None or hi is None:
        col = sql.Identifier(table.key[0].name)
        query = sql.SQL("SELECT min({c}), max({c}) FROM {t} WHERE {where}").format(
            c=col, t=sql.Identifier(table.schema, table.name), where=where
        )
        low, high = fetch_all(conn, query, params)[0]
        if low is None:
            return []
        lo = low if lo is None else lo
        hi = high + 1 if hi is None else hi
    step = max((hi - lo) // parts, 1)
    points, value = [], lo + step
    while value < hi and len(points) < parts - 1:
        points.append((str(value),))
        value += step
    return points


def sample_boundaries(conn, table, chunks, estimated_rows):
    """Ascending, distinct keys cutting the table into about ``chunks`` chunks.

    A single integer key is cut arithmetically between min and max (two index
    probes); other keys from an ordered sample: every row of a small table, a
    TABLESAMPLE BERNOULLI of about 200 rows per chunk of a large one (row-level
    sampling: block sampling would cut a table loaded in key order unevenly).
    """
    if chunks <= 1:
        return []
    tbl = sql.Identifier(table.schema, table.name)
    if len(table.key) == 1 and table.key[0].is_integer:
        col = sql.Identifier(table.key[0].name)
        lo, hi = fetch_all(conn, sql.SQL("SELECT min({c}), max({c}) FROM {t}").format(c=col, t=tbl))[0]
        if lo is None or hi <= lo:
            return []
        width = max((hi - lo + 1) // chunks, 1)
        points, value = [], lo + width
        while value <= hi and len(points) < chunks - 1:
            points.append((str(value),))
            value += width
        return points
    order = _ordered_by_key(table, "src")
    wanted = chunks * 200
    if estimated_rows > 4 * wanted:
        percent = min(100.0, 100.0 * wanted / float(estimated_rows))
        query = sql.SQL("SELECT {keys} FROM {t} AS src TABLESAMPLE BERNOULLI (%s) ORDER BY {order}").format(
            keys=key_text_exprs(table), t=tbl, order=order
        )
        sample = fetch_all(conn, query, [percent])
    else:
        query = sql.SQL("SELECT {keys} FROM {t} AS src ORDER BY {order}").format(keys=key_text_exprs(table), t=tbl, order=order)
        sample = fetch_all(conn, query)
    if len(sample) < 2:
        return []
    step = max(len(sample) // chunks, 1)
    points = []
    for i in range(step, len(sample), step):
        point = tuple(sample[i])
        if not points or points[-1] != point:
            points.append(point)
        if len(points) >= chunks - 1:
            break
    return points
