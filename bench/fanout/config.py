"""Writes the shardstream config for one fan-out run (bench/fanout.sh).

    config.py OUT.toml PORT URL,URL,... [--target KEY=SHARD_INDEX ...]

N shards s0..sN-1 (one URL each, shard order = URL order) and one scatter
route /items (items interleaved as they arrive: the kit's MERGE=concat), one
process (workers = 1), no access log, the same upstream settings as
bench/gateway.sh. With --target, the route also gets target_param =
"vendor_id" and a [shard_map.vendor_id] table mapping each KEY to shard
s<SHARD_INDEX>, so that ?vendor_id=KEY asks only that shard.
"""
import sys


def main(argv: list[str]) -> None:
    out, port, urls = argv[0], int(argv[1]), argv[2].split(",")
    targets: list[tuple[str, int]] = []
    rest = argv[3:]
    while rest:
        if rest[0] != "--target" or len(rest) < 2:
            sys.exit(f"config.py: unexpected {rest[0]!r}")
        key, _, idx = rest[1].partition("=")
        targets.append((key, int(idx)))
        rest = rest[2:]
    t = 10.0
    lines = [
        "[server]",
        f'listen = "tcp:{port}:interface=127.0.0.1"',
        "access_log = false",
        "workers = 1",
        "",
        "[upstream]",
        "connect_timeout = 2.0",
        f"first_byte_timeout = {t}",
        f"idle_timeout = {t}",
        "total_timeout = 30.0",
        "max_idle_connections = 512",
        "",
    ]
    for i, url in enumerate(urls):
        lines += [f"[shards.s{i}]", f'urls = ["{url}"]', ""]
    lines += ["[[routes]]", 'path = "/items"', 'mode = "scatter"', 'items = "data.item"',
              'sort = ["starts_at"]']
    if targets:
        lines.append('target_param = "vendor_id"')
        lines += ["", "[shard_map.vendor_id]"]
        lines += [f'{key} = "s{idx}"' for key, idx in targets]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
