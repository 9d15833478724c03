#!/usr/bin/env bash
# The kit's gateway contract -> a shardstream config -> twistd.
#   SHARD_URLS  comma-separated shard base URLs (shard order)
#   PORT        listen on 127.0.0.1:$PORT
#   MERGE       concat (we interleave: first item first) | starts_at (ordered merge)
#   SHARD_TIMEOUT  per-shard deadline, seconds
# SHARDSTREAM_PYTHON picks the interpreter (default: the bench venv's, with shardstream
# installed); with it the source tree's package and plugin run (PYTHONPATH, as the tests do);
# SHARDSTREAM_WORKERS the worker processes (default auto: one per core);
# SHARDSTREAM_PARTIAL=false puts the route in strict mode (`partial = false`: no 200 before
# every shard's 2xx headers), as `?partial=false` would (the kit's URL has no query);
# SHARDSTREAM_GC_THRESHOLD sets server.gc_threshold (0: CPython's collector unchanged);
# SHARDSTREAM_ITEM_PARSER server.item_parser (auto | native | python) and
# SHARDSTREAM_CLIENT upstream.client (lean | twisted), to measure each alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${SHARDSTREAM_PYTHON:-$here/out/venv/bin/python}
[ -z "${SHARDSTREAM_PYTHON:-}" ] || export PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"
conf=$(mktemp "${TMPDIR:-/tmp}/shardstream-bench-XXXXXX.toml")
"$py" - "$conf" <<'PY'
import os, sys
urls = os.environ["SHARD_URLS"].split(",")
t = float(os.environ.get("SHARD_TIMEOUT", "10"))
merge = os.environ.get("MERGE", "concat")
lines = [
    "[server]", f'listen = "tcp:{os.environ["PORT"]}:interface=127.0.0.1"',
    "access_log = false",
    f'gc_threshold = {int(os.environ.get("SHARDSTREAM_GC_THRESHOLD", "50000"))}',
    f'item_parser = "{os.environ.get("SHARDSTREAM_ITEM_PARSER", "auto")}"',
    f'workers = "{os.environ.get("SHARDSTREAM_WORKERS", "auto")}"'
    if os.environ.get("SHARDSTREAM_WORKERS", "auto") == "auto"
    else f'workers = {int(os.environ["SHARDSTREAM_WORKERS"])}',
    "[upstream]", f'client = "{os.environ.get("SHARDSTREAM_CLIENT", "lean")}"',
    "connect_timeout = 2.0", f"first_byte_timeout = {t}", f"idle_timeout = {t}",
    f"total_timeout = {max(t, 30.0)}", "max_idle_connections = 512",
]
for i, url in enumerate(urls):
    lines += [f"[shards.s{i}]", f'urls = ["{url}"]']
lines += ["[[routes]]", 'path = "/items"', 'mode = "scatter"', 'items = "data.item"',
          'sort = ["starts_at"]']
if merge == "starts_at":
    lines.append('default_sort = "starts_at"')
if os.environ.get("SHARDSTREAM_PARTIAL", "true") == "false":
    lines.append("partial = false")
open(sys.argv[1], "w").write("\n".join(l for l in lines if l) + "\n")
PY
exec "$py" -c "from twisted.scripts.twistd import run; run()" -n --pidfile= \
    shardstream --config "$conf"
