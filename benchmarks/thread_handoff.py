"""The floor under the async API's overhead: a bare hand-off to a thread and back.

    python benchmarks/thread_handoff.py [--trips 5000] [--rounds 5]

Two Python threads pass a byte back and forth through two pipes, the same
mechanism sqlkv's worker uses, doing no work at all. One trip is the least an
async call can cost over a sync one while SQLite runs off the event loop's
thread. Compare ``taskset -c 0 python benchmarks/thread_handoff.py``: on a
VM where an idle core halts, waking a thread on the other core costs far
more than switching to it on the same core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time


def one_round(trips: int) -> float:
    to_thread_r, to_thread_w = os.pipe()
    to_main_r, to_main_w = os.pipe()

    def echo() -> None:
        for _ in range(trips):
            os.read(to_thread_r, 1)
            os.write(to_main_w, b"\0")

    thread = threading.Thread(target=echo)
    thread.start()
    start = time.perf_counter()
    for _ in range(trips):
        os.write(to_thread_w, b"\0")
        os.read(to_main_r, 1)
    seconds = time.perf_counter() - start
    thread.join()
    for fd in (to_thread_r, to_thread_w, to_main_r, to_main_w):
        os.close(fd)
    return seconds / trips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trips", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times = [one_round(args.trips) for _ in range(args.rounds)]
    print(json.dumps({
        "round_trip_us": round(statistics.median(times) * 1e6, 1),
        "cpus_allowed": len(os.sched_getaffinity(0)),
    }))


if __name__ == "__main__":
    main()
