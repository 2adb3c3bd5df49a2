"""Redis servers for tests: standalone and a three-primary Cluster, on loopback.

Every server is a ``redis-server`` process of the test run's own, on a free
loopback port (never 6379, which a machine may already serve), with its data
in a temporary directory; tests stop them. Without the binary the tests that
need one are skipped, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers import in_ci

HOST = "127.0.0.1"
READY_SECONDS = 15
#: Redis Cluster nodes talk on a second port, their own plus 10000.
CLUSTER_BUS_OFFSET = 10000

#: Persistence settings by name, as the README lists them.
PERSISTENCE = {
    "none": ["--save", "", "--appendonly", "no"],
    "everysec": ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
    "always": ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
}


def redis_server_binary() -> str:
    """The path of ``redis-server``; skip the test without it (fail under CI)."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if in_ci():
            pytest.fail(message + "; CI must have it (.ci/run installs it)")
        pytest.skip(message)
    return path


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(with_bus: bool = False) -> int:
    """A loopback port nobody listens on (and its cluster bus port, if asked)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port == 6379:
            continue
        if not with_bus:
            return port
        if port + CLUSTER_BUS_OFFSET < 65536 and _port_is_free(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free loopback port found")


def ping(port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis server answers PING on ``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` on a free loopback port, its files in ``directory``."""

    def __init__(
        self, directory: Path, persistence: str = "none", cluster: bool = False, extra: list[str] = ()
    ) -> None:
        self.binary = redis_server_binary()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.persistence = persistence
        self.cluster = cluster
        self.extra = list(extra)
        self.port = 0
        self.process: subprocess.Popen | None = None

    def _args(self) -> list[str]:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--appendfilename", "appendonly.aof",
            *PERSISTENCE[self.persistence],
        ]
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.directory / "nodes.conf"),
                "--cluster-node-timeout", "5000",
            ]
        return args + self.extra

    def start(self) -> RedisServer:
        """Start on a free port (the same port again after a stop) and wait until it answers."""
        for _ in range(5):
            if not self.port:
                self.port = free_port(with_bus=self.cluster)
            self.process = subprocess.Popen(
                self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + READY_SECONDS
            while time.monotonic() < deadline and self.process.poll() is None:
                if ping(self.port):
                    return self
                time.sleep(0.02)
            self.process.kill()
            self.process.wait()
            self.port = 0  # taken meanwhile by someone else: try another
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def kill9(self) -> None:
        """``kill -9`` the server: no shutdown, no last save."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """Stop the server (SIGTERM, which saves what its settings say)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def command(self, *args: str) -> object:
        """One command to this server, on a connection of its own."""
        import redis

        with redis.Redis(host=HOST, port=self.port, decode_responses=True) as client:
            return client.execute_command(*args)


class RedisCluster3:
    """Three cluster-enabled servers joined as a Redis Cluster of three primaries."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [RedisServer(Path(directory) / f"node{i}", cluster=True) for i in range(3)]

    def start(self) -> RedisCluster3:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is missing (it comes with redis-server)")
        subprocess.run(
            [cli, "--cluster", "create", *(f"{HOST}:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in node.command("CLUSTER", "INFO") for node in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach state ok in 30 s")
            time.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        return f"redis+cluster://{HOST}:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class CuttingProxy:
    """A loopback TCP proxy in front of a server that can drop a connection
    mid-exchange: after forwarding part of the next request, or instead of
    forwarding the next reply."""

    def __init__(self, upstream_port: int) -> None:
        import threading

        self.upstream_port = upstream_port
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._plan: tuple | None = None
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def cut_request_after(self, nbytes: int) -> None:
        """Forward only the first ``nbytes`` of what a client sends next, then drop it."""
        with self._lock:
            self._plan = ("request", nbytes)

    def cut_next_reply(self) -> None:
        """Drop the connection instead of forwarding the server's next reply."""
        with self._lock:
            self._plan = ("reply",)

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((HOST, self.upstream_port))
            pair = (client, upstream)
            threading.Thread(target=self._pump, args=(client, upstream, "request", pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, "reply", pair), daemon=True).start()

    def _drop(self, pair: tuple) -> None:
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _pump(self, source: socket.socket, target: socket.socket, direction: str, pair: tuple) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._drop(pair)
                return
            with self._lock:
                plan = self._plan
                if plan is not None and plan[0] == direction:
                    self._plan = None
                    self.cuts += 1
                else:
                    plan = None
            try:
                if plan is not None:
                    if direction == "request":
                        target.sendall(data[: plan[1]])
                    self._drop(pair)
                    return
                target.sendall(data)
            except OSError:
                self._drop(pair)
                return

    def close(self) -> None:
        self._closed = True
        self._listener.close()
