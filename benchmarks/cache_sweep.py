"""Round trips against chunk-cache size and read-ahead: the counts behind the defaults.

    python benchmarks/cache_sweep.py

Counts only (they are the same on every machine): for each chunk-cache size,
the round trips and bytes read per op of ``point-select`` (2000 random
SELECTs on the 16 MiB database) and ``cold-open-read-16MiB``; then, for a
full scan of that database (``SELECT count(*), sum(length(v)) FROM t``), the
round trips with read-ahead capped at 1, 16 and 256 chunks per fetch. At
1 ms per round trip each round trip is a millisecond of waiting, so these
counts are the latency bill.
"""

from __future__ import annotations

import sqlkv
from sqlkv.storage import storage
from sqlkv.stores.latency import metered
from sqlkv.tools import bench

MIB = 1024 * 1024
CACHE_SIZES_MIB = (1, 4, 8, 16, 24, 32, 64)
READ_AHEAD_CAPS = (1, 16, storage.MAX_READ_AHEAD_CHUNKS)


def cache_rows() -> list[str]:
    rows = ["| chunk cache | point-select round trips/op | point-select bytes read/op "
            "| cold-open round trips | cold-open bytes read |", "|" + " --- |" * 5]
    for mib in CACHE_SIZES_MIB:
        plan = bench.Plan(
            workloads=(bench.POINT_SELECT, bench.COLD_OPEN), api="sync", cache_bytes=mib * MIB
        )
        select, cold = (r.as_dict() for r in bench.run_sync(plan))
        rows.append(
            f"| {mib} MiB | {select['kv_calls_per_op']:.3f} | {select['bytes_read_per_op']:,} "
            f"| {cold['kv_calls']} | {cold['bytes_read_per_op']:,} |"
        )
    return rows


def scan_rows() -> list[str]:
    store = sqlkv.MemoryStore()
    with sqlkv.connect(store, bench.DB_NAME, backend="pages") as db:
        for sql in bench.setup_16mib_sql():
            db.exec(sql)
    rows = ["| read-ahead cap (chunks per fetch) | scan round trips | chunks read |",
            "|" + " --- |" * 3]
    default = storage.MAX_READ_AHEAD_CHUNKS
    try:
        for cap in READ_AHEAD_CAPS:
            storage.MAX_READ_AHEAD_CHUNKS = cap
            counted = metered(store)
            with sqlkv.connect(counted, bench.DB_NAME, backend="pages") as db:
                counted.meter.reset()
                assert db.query("SELECT count(*), sum(length(v)) FROM t").rows == [
                    (bench.ROWS_16MIB, bench.ROWS_16MIB * 1000)
                ]
            rows.append(f"| {cap} | {counted.meter.round_trips:,} | {counted.meter.keys_read:,} |")
    finally:
        storage.MAX_READ_AHEAD_CHUNKS = default
    return rows


def main() -> None:
    print("\n".join(cache_rows()))
    print()
    print("\n".join(scan_rows()))


if __name__ == "__main__":
    main()
