"""Driving tests/writer_process.py processes from a test."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

WORKER = str(Path(__file__).resolve().parent / "writer_process.py")
ANSWER_SECONDS = 60


class Worker:
    """A ``writer_process.py serve`` process holding (or trying to hold) one database."""

    def __init__(self, url: str, name: str, lease_seconds: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, WORKER, "serve", url, name, str(lease_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.pid = self.process.pid

    def call(self, op: str, **fields) -> dict:
        """Send one command and wait (bounded) for its answer."""
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], ANSWER_SECONDS)
        if not ready:
            raise TimeoutError(f"worker {self.pid} did not answer {op} in {ANSWER_SECONDS} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.pid} exited (code {self.process.poll()})")
        return json.loads(line)

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("exit")
            except (OSError, RuntimeError, TimeoutError):
                pass
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_load(
    url: str, name: str, writer: str, *, seconds: float, max_commits: int, session: int = 0,
    lease_seconds: float = 5.0,
) -> subprocess.Popen:
    """Start a ``writer_process.py load`` process; its JSON report is its only stdout line."""
    return subprocess.Popen(
        [sys.executable, WORKER, "load", url, name, str(lease_seconds), str(seconds),
         str(max_commits), writer, str(session)],
        stdout=subprocess.PIPE, text=True,
    )


def load_report(process: subprocess.Popen, timeout: float) -> dict:
    """Wait (bounded) for a load process and return its report."""
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"load worker failed with code {process.returncode}"
    return json.loads(out.strip().splitlines()[-1])
