"""A small valid config file, for the tests to vary."""

from __future__ import annotations

from pathlib import Path

GOOD = """
[server]
listen = "tcp:8080:interface=127.0.0.1"

[upstream]
connect_timeout = 1
first_byte_timeout = 2.5

[shards.s1]
urls = ["http://127.0.0.1:9001/"]
[shards.s2]
urls = ["https://shard2.internal:8443/api"]

[[routes]]
path = "/v3/events"
mode = "scatter"
items = "data.item"

[[routes]]
path = "/v3/vendors/{vendor_id}/events"
mode = "route"
shard_key = "vendor_id"

[shard_map.vendor_id]
v100 = "s1"
v200 = "s2"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gw.toml"
    path.write_text(text)
    return str(path)
