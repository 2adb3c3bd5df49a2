"""Redis servers for tests, on loopback: standalone, a primary with a replica,
Sentinels watching it, and a three-primary Cluster (with or without a replica each).

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
CLUSTER_NODE_TIMEOUT_MS = 5000

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
            "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not after 5 s
            *PERSISTENCE[self.persistence],
        ]
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self.directory / "nodes.conf"),
                "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
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

    def pause(self) -> None:
        """``SIGSTOP`` the server: it answers nothing and reads nothing until :meth:`resume`."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """``SIGCONT`` a paused server."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def info(self, section: str) -> dict:
        """``INFO section``, as redis-py parses it (numbers as ints, ``slave0`` as a dict)."""
        return info(self.port, section)

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

    def command(self, *args: str | int) -> object:
        """One command to this server, on a connection of its own."""
        import redis

        with redis.Redis(host=HOST, port=self.port, decode_responses=True, socket_timeout=10) as client:
            return client.execute_command(*args)


def info(port: int, section: str) -> dict:
    """``INFO section`` of the server on ``port``, as redis-py parses it."""
    import redis

    with redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=10) as client:
        return client.info(section)


def wait_until(what: str, check, seconds: float = 30.0) -> None:
    """Poll ``check()`` until it is true, at most ``seconds``; a RuntimeError naming ``what`` after."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except _redis_errors() as exc:  # a server starting or failing over
            last: object = exc
        else:
            last = None
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds:g} s" + (f" ({last})" if last else ""))
        time.sleep(0.05)


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


def replica_acknowledges(primary: RedisServer) -> bool:
    """Whether ``primary``'s replica acknowledges a write within a second: a
    replica that just finished its first sync may take a while to (the first
    WAIT would time out). Writes an empty ``FLUSHALL``: for a server just started."""
    import redis

    with redis.Redis(host=HOST, port=primary.port, socket_timeout=10) as client:
        client.flushall()
        return client.wait(1, 1000) >= 1


def drop_replicas(primary: RedisServer) -> None:
    """Close ``primary``'s links to its replicas (``CLIENT KILL TYPE replica``): a
    paused replica cannot link again, so nothing the primary writes from now on
    reaches it."""
    primary.command("CLIENT", "KILL", "TYPE", "replica")
    wait_until("the primary dropping its replicas",
               lambda: int(primary.info("replication").get("connected_slaves", 0)) == 0)


def wait_until_synced(primary: RedisServer, replica: RedisServer, seconds: float = 30.0) -> None:
    """Wait until ``replica`` has every write ``primary`` has."""

    def synced() -> bool:
        want = int(primary.info("replication")["master_repl_offset"])
        return int(replica.info("replication").get("slave_repl_offset", -1)) >= want

    wait_until("the replica catching up with its primary", synced, seconds)


class ReplicatedRedis:
    """A primary and one replica (``replicaof``), standalone, no persistence."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.primary = RedisServer(self.directory / "primary")
        self.replica: RedisServer | None = None

    def start(self) -> ReplicatedRedis:
        self.primary.start()
        self.replica = RedisServer(
            self.directory / "replica", extra=["--replicaof", HOST, str(self.primary.port)]
        ).start()
        wait_until("the replica acknowledging the primary's writes", self.replica_linked)
        return self

    def replica_linked(self) -> bool:
        return replica_acknowledges(self.primary)

    def wait_synced(self, seconds: float = 30.0) -> None:
        """Wait until the replica has every write the primary has."""
        assert self.replica is not None
        wait_until_synced(self.primary, self.replica, seconds)

    @property
    def replica_url(self) -> str:
        assert self.replica is not None
        return self.replica.url


    @property
    def url(self) -> str:
        return self.primary.url

    def stop(self) -> None:
        if self.replica is not None:
            if self.replica.process is not None and self.replica.process.poll() is None:
                self.replica.resume()  # a stopped process does not act on SIGTERM
            self.replica.stop()
        self.primary.stop()


class SentinelServer(RedisServer):
    """One Redis Sentinel (``redis-server CONFIG --sentinel``) watching ``primary_port``."""

    def __init__(
        self, directory: Path, service: str, primary_port: int, down_after_ms: int, failover_timeout_ms: int
    ) -> None:
        super().__init__(directory)
        self.service = service
        self.primary_port = primary_port
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def _args(self) -> list[str]:
        config = self.directory / "sentinel.conf"  # Sentinel rewrites it: written anew at each start
        config.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            f"dir {self.directory}\n"
            f"logfile {self.directory / 'sentinel.log'}\n"
            f"sentinel monitor {self.service} {HOST} {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        return [self.binary, str(config), "--sentinel"]


class Sentinels:
    """Three Sentinels (quorum 2) watching one primary as ``service``, with short
    failure detection (``down_after_ms``) so that a failover takes seconds."""

    def __init__(
        self,
        directory: Path,
        primary_port: int,
        service: str = "sqlkvtest",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.service = service
        self.primary_port = primary_port
        self.nodes = [
            SentinelServer(Path(directory) / f"sentinel{i}", service, primary_port, down_after_ms, failover_timeout_ms)
            for i in range(3)
        ]

    def start(self, replicas: int = 1) -> Sentinels:
        """Start them and wait until each knows the primary's replicas and the other two."""
        for node in self.nodes:
            node.start()

        def ready() -> bool:
            for node in self.nodes:
                fields = self.primary_state(node)
                if int(fields["num-slaves"]) < replicas or int(fields["num-other-sentinels"]) < 2:
                    return False
            return True

        wait_until("the Sentinels discovering the replica and each other", ready)
        return self

    def primary_state(self, node: SentinelServer) -> dict:
        """What ``node`` says of the primary (``SENTINEL MASTER``): flags, port, counts."""
        state = node.command("SENTINEL", "MASTER", self.service)
        return dict(zip(state[::2], state[1::2])) if isinstance(state, list) else state

    def primary_port_now(self) -> int:
        """The primary's port as the first Sentinel that answers names it."""
        for node in self.nodes:
            try:
                _, port = node.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return int(port)
            except _redis_errors():
                continue
        raise RuntimeError("no Sentinel answers")

    def wait_failover(self, old_port: int, seconds: float = 30.0) -> int:
        """Wait until the Sentinels name another primary, and it takes writes; its port."""

        def moved() -> bool:
            # Every Sentinel names the new primary and sees it up (what redis-py's
            # discovery asks), and the primary says it is one.
            ports = set()
            for node in self.nodes:
                fields = self.primary_state(node)
                if fields["flags"] != "master":
                    return False
                ports.add(int(fields["port"]))
            (port,) = ports if len(ports) == 1 else (old_port,)
            return port != old_port and info(port, "replication").get("role") == "master"

        wait_until("the Sentinels promoting a replica", moved, seconds)
        return self.primary_port_now()

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{node.port}" for node in self.nodes)
        return f"redis+sentinel://{hosts}/{self.service}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class RedisCluster3:
    """Three cluster-enabled servers joined as a Redis Cluster of three primaries;
    with ``replicas=1``, six, each primary with a replica that may replace it
    (``node_timeout_ms`` is how long a silent node takes to be failed over)."""

    def __init__(self, directory: Path, replicas: int = 0, node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS) -> None:
        extra = ["--cluster-node-timeout", str(node_timeout_ms)]  # the last one given counts
        if replicas:  # a replica may take over however long it was cut off from its primary
            extra += ["--cluster-replica-validity-factor", "0"]
        self.replicas = replicas
        self.nodes = [
            RedisServer(Path(directory) / f"node{i}", cluster=True, extra=extra)
            for i in range(3 * (1 + replicas))
        ]

    def start(self) -> RedisCluster3:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is missing (it comes with redis-server)")
        subprocess.run(
            [cli, "--cluster", "create", *(f"{HOST}:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )
        self.wait_ok(self.nodes)
        if self.replicas:
            wait_until("every replica acknowledging its primary", lambda: all(
                replica_acknowledges(node) for node in self.nodes
                if node.info("replication").get("role") == "master"
            ))
        return self

    def wait_ok(self, nodes: list[RedisServer], seconds: float = 30.0) -> None:
        """Wait until each of ``nodes`` says the cluster's state is ok."""
        wait_until(
            "the Redis Cluster reaching state ok",
            lambda: all("cluster_state:ok" in str(node.command("CLUSTER", "INFO")) for node in nodes),
            seconds,
        )

    def node_at(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """The replica of ``primary`` (as the primary lists it)."""
        return self.node_at(int(primary.info("replication")["slave0"]["port"]))

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
