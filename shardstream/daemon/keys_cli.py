"""``shardstream-keys``: create, list and revoke partner API keys.

    shardstream-keys add --file KEYS --partner NAME [--scope PATH[:read|:write]]...
                         [--rate PER_SECOND] [--burst N] [--concurrency N] [--config GATEWAY]
    shardstream-keys list --file KEYS
    shardstream-keys revoke --file KEYS --partner NAME [--key ID]

``add`` prints the new key once, alone on the last line of its output; the
file only ever holds its hash. With ``--config``, every scope must name a
route of that gateway config, as the gateway will check when it reads the
file: a typo is refused here, not found later as a rejected reload. A partner may have several keys (rotation:
add the new one, move the client over, revoke the old one by id). The
gateway reads the file at start and on SIGHUP. The file is replaced
atomically, keeping its permissions (0600 when it is new).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import tomllib
from typing import Any

import tomli_w

from ..core import keys
from ..core.config import ConfigError, route_paths

HEADER = ("# shardstream partner API keys: hashes only, never a key. Managed with\n"
          "# shardstream-keys add|list|revoke; the gateway re-reads it on SIGHUP.\n")


def _load(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {"partners": {}}
    with open(path, "rb") as f:
        data = tomllib.load(f)
    keys.parse(data, path)  # refuse to edit a file the gateway would refuse
    data.setdefault("partners", {})
    return data


def _save(path: str, data: dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o600
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".keys-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(HEADER + tomli_w.dumps(data))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def add(a: argparse.Namespace) -> int:
    data = _load(a.file)
    partners = data["partners"]
    entry = partners.get(a.partner)
    if entry is None:
        if not a.scope:
            raise SystemExit("shardstream-keys: a new partner needs at least one --scope")
        entry = partners[a.partner] = {"scopes": [], "keys": []}
    if a.scope:
        for scope in a.scope:
            keys.parse_scope(scope)  # ValueError: reported below
        entry["scopes"] = list(a.scope)
    for name in ("rate", "burst", "concurrency"):
        if getattr(a, name) is not None:
            entry[name] = getattr(a, name)
    routes = None if a.config is None else route_paths(a.config)
    key_id, key = keys.new_key()
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    entry.setdefault("keys", []).append({"id": key_id, "hash": keys.hash_key(key),
                                         "created": created})
    keys.parse(data, a.file, routes)
    _save(a.file, data)
    print(f"added key {key_id} for partner {a.partner} ({a.file}); it is shown once:")
    print(key)
    return 0


def list_keys(a: argparse.Namespace) -> int:
    store = keys.parse(_load(a.file), a.file)
    for p in store.partners:
        limits = ", ".join(f"{n} {v}" for n, v in (("rate", p.rate), ("burst", p.burst),
                                                   ("concurrency", p.concurrency))
                           if v is not None) or "no limits"
        print(f"{p.name}: scopes {' '.join(map(str, p.scopes))}; {limits}")
        for k in p.keys:
            print(f"  key {k.id} created {k.created or '?'}")
        if not p.keys:
            print("  no keys (revoked)")
    return 0


def revoke(a: argparse.Namespace) -> int:
    data = _load(a.file)
    entry = data["partners"].get(a.partner)
    if entry is None:
        raise SystemExit(f"shardstream-keys: no partner {a.partner!r} in {a.file}")
    before = entry.get("keys", [])
    entry["keys"] = [k for k in before if a.key is not None and k["id"] != a.key]
    gone = len(before) - len(entry["keys"])
    if not gone:
        raise SystemExit(f"shardstream-keys: partner {a.partner} has no key {a.key}")
    _save(a.file, data)
    print(f"revoked {gone} key(s) of partner {a.partner}; send SIGHUP to the gateway "
          "(systemctl reload shardstream) to apply it")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shardstream-keys", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("add", help="create a key for a partner (printed once)")
    p.add_argument("--file", required=True)
    p.add_argument("--partner", required=True)
    p.add_argument("--scope", action="append", default=[],
                   help="a route's path, optionally :read (GET, HEAD) or :write; repeatable")
    p.add_argument("--rate", type=float, help="requests per second")
    p.add_argument("--burst", type=int)
    p.add_argument("--concurrency", type=int, help="list streams in flight")
    p.add_argument("--config", help="the gateway's config file: refuse scopes that name "
                   "none of its routes")
    p.set_defaults(run=add)
    p = sub.add_parser("list", help="partners, scopes, limits and key ids")
    p.add_argument("--file", required=True)
    p.set_defaults(run=list_keys)
    p = sub.add_parser("revoke", help="remove a partner's keys (or one, by id)")
    p.add_argument("--file", required=True)
    p.add_argument("--partner", required=True)
    p.add_argument("--key", help="the id of one key (default: every key of the partner)")
    p.set_defaults(run=revoke)
    a = ap.parse_args(argv)
    try:
        return int(a.run(a))
    except (ConfigError, ValueError, OSError, tomllib.TOMLDecodeError) as e:
        sys.stderr.write(f"shardstream-keys: {e}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
