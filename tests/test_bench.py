"""`sqlkv bench`: the workloads' counts against the targets, and its output.

Speed is the benchmark's business (BENCHMARKS.md); these tests check the
counts, which do not depend on the machine: round trips, bytes and chunks per
op of each workload on backend ``pages`` and a MemoryStore, as issue 5 sets
them.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from sqlkv.cli import main as cli
from sqlkv.tools import bench

REQUIRED_FIELDS = {
    "system": str,
    "workload": str,
    "latency_ms": (int, float),
    "ops": int,
    "seconds": float,
    "ops_per_s": float,
    "kv_calls": int,
    "kv_calls_per_op": float,
    "bytes_written_per_op": int,
    "bytes_read_per_op": int,
}


@pytest.fixture(scope="session")
def pages_results() -> dict[str, dict]:
    """Every workload once, on backend pages, MemoryStore, through the async API."""
    results = bench.run_sync(bench.Plan(systems=("pages",)))
    return {r.workload: r.as_dict() for r in results}


def test_every_workload_ran_its_ops(pages_results):
    assert {w: r["ops"] for w, r in pages_results.items()} == bench.OPS


def test_insert_autocommit_one_round_trip_and_at_most_4_42_kb_per_insert(pages_results):
    r = pages_results[bench.INSERT_AUTOCOMMIT]
    assert r["kv_calls"] == 1000
    # 4,396 bytes before the head fence (issue 21) added its head and parent ids, 17 per commit.
    assert r["bytes_written_per_op"] <= 4420
    assert r["bytes_read_per_op"] == 0


def test_insert_batched_one_round_trip_per_transaction(pages_results):
    r = pages_results[bench.INSERT_BATCHED]
    assert r["kv_calls"] == 100
    # 100 rows of ~110 bytes fill about 3 pages; a transaction rewrites a handful.
    assert r["chunks_written_per_op"] <= 8


def test_point_select_at_most_0_05_round_trips_per_select(pages_results):
    r = pages_results[bench.POINT_SELECT]
    assert r["kv_calls_per_op"] <= 0.05
    assert r["bytes_written_per_op"] == 0


def test_update_at_most_one_round_trip_and_three_chunks_per_update(pages_results):
    r = pages_results[bench.UPDATE]
    assert r["kv_calls_per_op"] <= 1.0
    assert r["chunks_written_per_op"] <= 3


def test_cold_open_read_at_most_3_round_trips_and_64_kb(pages_results):
    r = pages_results[bench.COLD_OPEN]
    assert r["kv_calls"] <= 3
    assert r["bytes_read_per_op"] <= 64 * 1000
    assert r["bytes_written_per_op"] == 0


def test_a_later_chain_workload_alone_starts_from_the_same_state(pages_results):
    """cold-open picked alone runs point-select and update first, unmeasured."""
    (alone,) = bench.run_sync(bench.Plan(workloads=(bench.COLD_OPEN,), api="sync"))
    chained = pages_results[bench.COLD_OPEN]
    assert (alone.kv_calls, alone.bytes_read) == (chained["kv_calls"], chained["bytes_read_per_op"])


def test_latency_is_added_to_every_round_trip():
    (r,) = bench.run_sync(
        bench.Plan(workloads=(bench.INSERT_BATCHED,), latency_ms=2, api="sync")
    )
    assert r.kv_calls == 100
    assert r.store_seconds >= 100 * 0.002
    assert r.as_dict()["round_trip_ms"] >= 2


# -- the command ----------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["bench", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_bench_prints_one_json_line_per_workload_with_the_required_fields(capsys):
    code, out, _ = run_cli(
        capsys, "--workload", "insert-autocommit", "--workload", "insert-batched-100"
    )
    assert code == 0
    lines = json_lines(out)
    assert [d["workload"] for d in lines] == ["insert-autocommit", "insert-batched-100"]
    for d in lines:
        assert list(d)[: len(REQUIRED_FIELDS)] == list(REQUIRED_FIELDS)
        for name, kind in REQUIRED_FIELDS.items():
            assert isinstance(d[name], kind), name
        assert d["system"] == "sqlkv-pages/memory"
        assert d["latency_ms"] == 0
        assert d["ops_per_s"] == pytest.approx(d["ops"] / d["seconds"], rel=0.01)
        assert d["kv_calls_per_op"] == pytest.approx(d["kv_calls"] / d["ops"])


def test_bench_baseline_has_no_round_trip_figures(capsys):
    code, out, _ = run_cli(
        capsys, "--backend", "sqlite3-file", "--workload", "insert-batched-100"
    )
    assert code == 0
    (d,) = json_lines(out)
    assert d["system"] == "sqlite3-file(synchronous=FULL)"
    assert d["ops"] == 100 and d["ops_per_s"] > 0
    assert d["kv_calls"] is None and d["bytes_written_per_op"] is None


def test_bench_on_lmdb_names_the_store(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys, "--store", f"lmdb://{tmp_path}", "--workload", "insert-batched-100"
    )
    assert code == 0
    (d,) = json_lines(out)
    assert d["system"] == "sqlkv-pages/lmdb"
    assert d["kv_calls"] == 100
    assert list(tmp_path.iterdir()) == []  # its environment was removed afterwards


@pytest.mark.skipif(
    importlib.util.find_spec("sqlkv.engine.snapshot") is None, reason="backend snapshot not built"
)
def test_bench_runs_backend_snapshot(capsys):
    code, out, _ = run_cli(capsys, "--backend", "snapshot", "--workload", "insert-batched-100")
    assert code == 0
    (d,) = json_lines(out)
    assert d["system"] == "sqlkv-snapshot/memory" and d["ops"] == 100


def test_bench_table_format(capsys):
    code, out, _ = run_cli(
        capsys, "--format", "table", "--api", "sync", "--workload", "insert-batched-100"
    )
    assert code == 0
    assert "insert-batched-100" in out and "sqlkv-pages-sync/memory" in out
    assert "1.000" in out  # round trips per transaction


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workload", "insert-everything"], "workload must be one of"),
        (["--backend", "postgres"], "backend must be one of"),
        (["--latency-ms", "-1"], "latency_ms must not be negative"),
    ],
)
def test_bench_refuses_bad_options(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == cli.EXIT_USAGE  # bad options are usage errors (see cli.EXIT_STATUSES)
    assert out == ""
    assert message in " ".join(err.split())


def test_a_chunk_cache_smaller_than_the_database_costs_a_round_trip_per_select():
    """The default chunk cache holds the 16 MiB database; 4 MiB does not."""
    (small,) = bench.run_sync(
        bench.Plan(workloads=(bench.POINT_SELECT,), api="sync", cache_bytes=4 * 1024 * 1024)
    )
    assert small.kv_calls >= 2000
