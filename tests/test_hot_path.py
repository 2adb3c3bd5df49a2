"""The CI gate on the hot path's work (issue 22): counts per operation against a baseline.

Counts, not times: Python calls into sqlkv (and, on the baseline's Python
version, every Python call), store round trips and bytes, per operation of
each workload of docs/workloads.md through both APIs (tests/hot_path.py says
how they are taken). A change that makes the hot path do more, or less, moves
a count past the tolerance and fails here until the baseline is rewritten on
purpose.
"""

from __future__ import annotations

import pytest
from hot_path import BASELINE, UPDATE_HINT, departures, load_baseline, measure


@pytest.fixture(scope="module")
def measured() -> dict:
    return measure()


def test_every_workload_and_api_is_in_the_baseline(measured):
    baseline = load_baseline()
    for api, by_workload in measured["counts"].items():
        assert set(by_workload) == set(baseline["counts"][api]), f"{BASELINE}: {api} workloads differ"


def test_counts_per_op_within_the_baseline(measured):
    moved = departures(measured, load_baseline())
    assert not moved, "the hot path's work per operation moved:\n" + "\n".join(moved) + "\n" + UPDATE_HINT


def test_a_count_past_the_tolerance_is_reported_either_way(measured):
    more = {"python": measured["python"], "counts": {"sync": {"point-select": {"sqlkv_calls": 100.0}}}}
    base = {"python": measured["python"], "counts": {"sync": {"point-select": {"sqlkv_calls": 50.0}}}}
    assert departures(more, base) == ["sync point-select sqlkv_calls: 100.0 per op, baseline 50.0 (more)"]
    assert "(fewer)" in departures(base, more)[0]
    # Within the tolerance: nothing; on another Python version, python_calls is not checked.
    near = {"python": "2.7", "counts": {"sync": {"point-select": {"sqlkv_calls": 51.0, "python_calls": 1.0}}}}
    far = {"python": "3.0", "counts": {"sync": {"point-select": {"sqlkv_calls": 50.0, "python_calls": 99.0}}}}
    assert departures(near, far) == []
