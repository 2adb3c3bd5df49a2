"""benchmarks/compare.py: one round of its workloads runs HEAD's workload code on the library given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPARE = ROOT / "benchmarks" / "compare.py"


def _round(job: dict) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(
        [sys.executable, str(COMPARE), "--child", json.dumps(job), "--bench-py", str(ROOT / "src" / "sqlkv" / "tools" / "bench.py")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_a_round_of_the_five_workloads_reports_each_with_its_round_trips():
    figures = _round({"kind": "workloads", "store": "memory", "api": "sync"})
    trips = {f["figure"]: f["round_trips_per_op"] for f in figures}
    assert trips == {
        "insert-autocommit sync memory": 1.0,
        "insert-batched-100 sync memory": 1.0,
        "point-select sync memory": 0.012,
        "update-16MiB sync memory": 1.0,
        "cold-open-read-16MiB sync memory": 3.0,
    }
    assert all(f["rate"] > 0 for f in figures)


def test_a_bad_revision_is_one_line_naming_it():
    proc = subprocess.run(
        [sys.executable, str(COMPARE), "no-such-revision-xyz", "--rounds", "1", "--figures", "overhead"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "no-such-revision-xyz" in proc.stderr
