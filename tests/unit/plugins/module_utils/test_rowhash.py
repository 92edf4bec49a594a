# -*- coding: utf-8 -*-
"""Chunk geometry of module_utils/rowhash.py (no database needed)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.stateful.rollback.plugins.module_utils import rowhash
from ansible_collections.stateful.rollback.plugins.module_utils.catalog import Column, Table


def table(*key_types):
    key = [Column("k%d" % i, "pg_catalog", t, t, True) for i, t in enumerate(key_types)]
    return Table("public", "t", key + [Column("v", "pg_catalog", "text", "text", False)], key, "primary key", 10)


def test_chunk_ranges_cover_the_key_space_without_gaps():
    ranges = rowhash.chunk_ranges([("10",), ("20",)])
    assert ranges == [rowhash.Range(None, ("10",)), rowhash.Range(("10",), ("20",)), rowhash.Range(("20",), None)]
    assert rowhash.chunk_ranges([]) == [rowhash.Range(None, None)]


def test_arithmetic_step_only_for_evenly_spaced_integer_keys():
    assert rowhash._arithmetic_step(table("int8"), [("11",), ("21",), ("31",)]) == (11, 31, 10)
    assert rowhash._arithmetic_step(table("int8"), [("11",), ("21",), ("32",)]) is None
    assert rowhash._arithmetic_step(table("text"), [("11",), ("21",)]) is None
    assert rowhash._arithmetic_step(table("int4", "int4"), [("1", "1"), ("2", "1")]) is None
    assert rowhash._arithmetic_step(table("int8"), [("5",)]) is None


def _bucket_in_python(boundaries, value):
    """width_bucket(value, boundaries): how many boundaries are <= value."""
    return sum(1 for b in boundaries if b <= value)


def test_arithmetic_bucket_matches_width_bucket_semantics():
    # The CASE expression: < first -> 0; >= last -> n; else (v - first) / step + 1.
    boundaries = [11, 21, 31, 41]
    first, last, step = 11, 41, 10
    for value in range(-5, 60):
        if value < first:
            bucket = 0
        elif value >= last:
            bucket = len(boundaries)
        else:
            bucket = (value - first) // step + 1
        assert bucket == _bucket_in_python(boundaries, value), value


def test_bucket_expression_uses_bound_parameters_only():
    expr, params = rowhash._bucket_expr(table("text"), [("a",), ("m",)])
    assert params == ["a", "m"]
    expr, params = rowhash._bucket_expr(table("int8"), [("11",), ("21",), ("31",)])
    assert params == [11, 31, 3, 11, 10]
    expr, params = rowhash._bucket_expr(table("int8"), [])
    assert params == []


def test_key_dict_and_range_as_dict():
    t = table("int8", "text")
    assert rowhash.key_dict(t.key, ("42", "x")) == {"k0": 42, "k1": "x"}
    rng = rowhash.Range(("1", "a"), None)
    assert rng.as_dict(t.key) == {"from": {"k0": 1, "k1": "a"}, "to": None}
