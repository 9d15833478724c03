"""What a file directory of N keys costs: load time and memory.

    python bench/directory.py [N]      (default 1,000,000)

Writes a CSV of N vendor keys over 64 shards (1% of them moving), loads it
the way the gateway does (shardstream.core.directory.parse_file), and prints
the time and the resident memory it added, per million keys.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time

from shardstream.core.directory import parse_file


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    shards = [f"shard-{i:02d}" for i in range(64)]
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write("key,shard\n")
        for k in range(n):
            owner = shards[k % 64]
            if k % 100 == 0:
                owner += ">" + shards[(k + 1) % 64]
            f.write(f"v{k},{owner}\n")
        path = f.name
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        data = fh.read()
    gc.collect()
    before = rss()
    started = time.perf_counter()
    table = parse_file(data, path, set(shards))
    elapsed = time.perf_counter() - started
    del data
    gc.collect()
    added = rss() - before + size  # the file's bytes were counted in `before`; now freed
    os.unlink(path)
    started = time.perf_counter()
    for k in range(0, n, 7):
        table.get(f"v{k}")
    lookup = (time.perf_counter() - started) / len(range(0, n, 7))
    per_million = added / n * 1_000_000
    print(f"keys {len(table)}  file {size / 1e6:.1f} MB  load {elapsed:.2f} s "
          f"({n / elapsed / 1e6:.2f} M keys/s)  memory {added / 1e6:.0f} MB "
          f"({per_million / 1e6:.0f} MB per million keys)  lookup {lookup * 1e9:.0f} ns")


if __name__ == "__main__":
    main()
