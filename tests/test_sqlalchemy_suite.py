"""SQLAlchemy's own third-party dialect compliance suite, against the ``sqlkv`` dialect.

SQLAlchemy's pytest plugin wants a session of its own, so the suite runs as a
subprocess in tests/sqlalchemy_suite (its conftest, setup.cfg and
requirements), on an LMDB store in a temporary directory. It must pass with
no failure. Tests it skips by name are checked here too: those listed as
failing with SQLAlchemy's own ``sqlite+pysqlite`` driver must still fail
there, so the list cannot hide a fault of sqlkv's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="SQLAlchemy is the extra [sqlalchemy] (and in [test])")

SUITE = Path(__file__).with_name("sqlalchemy_suite")
#: Bounded: the suite takes well under a minute alone on this machine's 2 cores.
TIMEOUT = 280


def _run_suite(cwd: Path, *args: str, env_extra: dict[str, str] | None = None) -> tuple[int, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SUITE), env.get("PYTHONPATH", "")) if p)
    env.update(env_extra or {})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(SUITE / "setup.cfg"), "--rootdir", str(SUITE),
         str(SUITE), "-q", "-p", "no:cacheprovider", "--tb=short", "-rfEs", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _count(output: str, word: str) -> int:
    """How many tests the run's closing line says were ``word`` (passed, failed, ...)."""
    summary = re.findall(r"^=+ (.*) in [\d.]+s(?: \([^)]*\))? =+$", output, re.M)
    assert summary, output[-3000:]
    found = re.search(rf"(\d+) {word}", summary[-1])
    return int(found.group(1)) if found else 0


def _listed(name: str) -> list[str]:
    lines = (SUITE / name).read_text().splitlines()
    return [line.split("\t", 1)[0] for line in lines if line and not line.startswith("#")]


def test_compliance_suite_passes(tmp_path) -> None:
    code, output = _run_suite(tmp_path)
    assert code == 0, output[-6000:]
    assert _count(output, "failed") == 0 and _count(output, "error") == 0, output[-3000:]
    assert _count(output, "passed") >= 1000, output[-3000:]
    # Every test skipped by name was collected and skipped (the lists name real tests).
    for name in ("sqlite_dialect_failures.txt", "sqlkv_skips.txt"):
        skipped = sum(
            int(n) for n, reason in re.findall(r"SKIPPED \[(\d+)\] [^\n]*?: (as with sqlite\+pysqlite|uses the schema)", output)
            if (reason == "uses the schema") == (name == "sqlkv_skips.txt")
        )
        assert skipped == len(_listed(name)), name


def test_skipped_as_sqlite_dialect_failures_fail_with_pysqlite(tmp_path) -> None:
    listed = _listed("sqlite_dialect_failures.txt")
    classes = sorted({test_id.split("::", 1)[0] for test_id in listed})
    code, output = _run_suite(
        tmp_path, "--dburi", f"sqlite:///{tmp_path / 'baseline.db'}", "-k", " or ".join(classes),
        env_extra={"SQLKV_SUITE_NO_SKIPS": "1"},
    )
    failed = {
        re.sub(r"_sqlite\+pysqlite[0-9_]*", "", found)
        for found in re.findall(r"^(?:FAILED|ERROR) \S*?::(\w+::[^\n]*?)(?: - .*)?$", output, re.M)
    }
    assert code == 1, output[-3000:]
    missing = [test_id for test_id in listed if test_id not in failed]
    assert not missing, f"no longer fail with sqlite+pysqlite, remove from the list: {missing}"
