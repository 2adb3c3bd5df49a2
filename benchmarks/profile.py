"""Profile the measured ops of one workload with pyinstrument (setup left out).

    python benchmarks/profile.py point-select [--api sync] [--latency-ms 0] [--html out.html]

The profiler starts when the workload's counters are reset (the end of its
setup) and stops when its result is taken, so only the measured ops are in
it. pyinstrument samples the thread that started it: with ``--api sync``
(the default here) that thread runs SQLite, the VFS and the store calls, so
the profile is the engine's work per op. The async API runs that same code
on a worker thread; its hand-off cost is measured by async_overhead.py, or
seen with ``py-spy record --threads -- sqlkv bench --workload W``.
"""

from __future__ import annotations

import argparse
import asyncio

from pyinstrument import Profiler

from sqlkv.tools import bench


class ProfiledSession(bench.SqlkvSession):
    """A session that profiles each measured section; keeps the one of ``target``."""

    def __init__(self, target: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.target = target
        self.kept: Profiler | None = None
        self._profiler: Profiler | None = None

    def reset(self) -> None:
        super().reset()
        self._profiler = Profiler(interval=0.0001, async_mode="disabled")
        self._profiler.start()

    def result(self, workload: str, ops: int, seconds: float) -> bench.Result:
        self._profiler.stop()
        if workload == self.target:
            self.kept = self._profiler
        return super().result(workload, ops, seconds)


async def profile(workload: str, api: str, latency_ms: float) -> tuple[bench.Result, Profiler]:
    session = ProfiledSession(workload, "pages", "memory://", latency_ms, api)
    try:
        if workload == bench.INSERT_AUTOCOMMIT:
            result = await bench.run_insert_autocommit(session)
        elif workload == bench.INSERT_BATCHED:
            result = await bench.run_insert_batched(session)
        else:
            results = [r async for r in bench.run_chain_16mib(session, [workload])]
            (result,) = results
    finally:
        session.finish()
    return result, session.kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=bench.WORKLOADS)
    parser.add_argument("--api", choices=bench.APIS, default="sync")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--html", help="also write pyinstrument's HTML report here")
    args = parser.parse_args()
    result, profiler = asyncio.run(profile(args.workload, args.api, args.latency_ms))
    d = result.as_dict()
    print(f"{d['workload']}: {d['ops_per_s']:,.0f} ops/s under the profiler, "
          f"{d['kv_calls_per_op']} round trips/op")
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if args.html:
        with open(args.html, "w") as f:
            f.write(profiler.output_html())


if __name__ == "__main__":
    main()
