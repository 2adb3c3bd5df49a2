"""Import N MiB in one transaction into an on-disk store limited to 128 keys a
batch; print the process's peak RSS. Run by test_recovery (slow) as a subprocess."""

import json
import resource
import sys
import tempfile
import time

from helpers import SqliteFileStore

import sqlkv


def peak_rss_mib() -> int:
    """This process's peak RSS. Linux keeps ru_maxrss across exec (a child of a
    big process inherits its figure), so read the memory map's own high-water mark."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


mib = int(sys.argv[1])
rows = mib * 1024 * 1024 // 1024
with tempfile.TemporaryDirectory() as tmp:
    store = SqliteFileStore(f"{tmp}/kv.sqlite", sqlkv.StoreLimits(max_batch_keys=128))
    with sqlkv.connect(store, "big.db", backend="pages") as db:
        db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        start = time.time()
        db.exec(
            f"BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
            "INSERT INTO t(v) SELECT zeroblob(1000) FROM n; COMMIT;"
        )
        seconds = time.time() - start
        count = db.query("SELECT count(*) FROM t").rows[0][0]
        stats = db.stats.as_dict()
    with sqlkv.connect(store, "big.db") as db:
        ok = db.query("PRAGMA quick_check").rows[0][0]
    store.close()
print(json.dumps({
    "mib": mib, "rows": count, "seconds": round(seconds, 1), "quick_check": ok,
    "max_rss_mib": peak_rss_mib(),
    "round_trips": stats["round_trips"], "commits": stats["commits"],
}))
