"""Which shard owns which key: the shard directory, without any I/O.

An entry is ``"shard"`` (that shard owns the key) or ``"source>target"``
(the tenant is being copied from source to target: the source still answers
every read, writes wait). :class:`OwnerTable` holds the entries of one key
kind compactly (a dict from key to a small int naming one of the few
distinct entries), so that a million keys cost one dict, not a million
entry objects. Parsing a directory file and placing a new key by
rendezvous hashing are plain functions; the shell loads files in a thread
and talks to Redis.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass
from typing import Collection, Iterable, Iterator, Mapping, Sequence


@dataclass(frozen=True, slots=True)
class Owner:
    """A directory entry: the shard that owns a key, or a move in progress."""

    shard: str  # answers reads (the source while a move is in progress)
    moving_to: str | None = None

    @property
    def moving(self) -> bool:
        return self.moving_to is not None

    def __str__(self) -> str:
        return self.shard if self.moving_to is None else f"{self.shard}>{self.moving_to}"


class BadEntry(ValueError):
    """A directory value that is not ``shard`` or ``source>target`` of known shards."""


def parse_owner(text: str, shards: Collection[str] | None = None) -> Owner:
    """``"s1"`` or ``"s1>s2"``; ``shards``: the names that may appear (None: any)."""
    source, arrow, target = text.strip().partition(">")
    source, target = source.strip(), target.strip()
    if not source or (arrow and not target):
        raise BadEntry(f"{text!r} must be a shard name or 'source>target'")
    if arrow and source == target:
        raise BadEntry(f"{text!r} moves a tenant to the shard it is on")
    for name in (source, target) if arrow else (source,):
        if shards is not None and name not in shards:
            raise BadEntry(f"{text!r} names shard {name!r}, which is not in [shards]")
    return Owner(source, target or None)


class OwnerTable(Mapping[str, Owner]):
    """The entries of one key kind; read-only once built."""

    __slots__ = ("_index", "_owners")

    def __init__(self, entries: Iterable[tuple[str, Owner]] = ()) -> None:
        owners: list[Owner] = []
        slot: dict[Owner, int] = {}
        index: dict[str, int] = {}
        for key, owner in entries:
            n = slot.get(owner)
            if n is None:
                n = slot[owner] = len(owners)
                owners.append(owner)
            index[key] = n
        self._index = index
        self._owners = tuple(owners)

    def __getitem__(self, key: str) -> Owner:
        return self._owners[self._index[key]]

    def get(self, key: str, default: Owner | None = None) -> Owner | None:  # type: ignore[override]
        n = self._index.get(key)
        return default if n is None else self._owners[n]

    def __len__(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OwnerTable) and dict(self.items()) == dict(other.items())

    def __hash__(self) -> int:
        return hash(len(self._index))

    def moves(self) -> dict[str, Owner]:
        """The keys whose tenant is being moved (few: a dict is fine)."""
        moving = {n for n, o in enumerate(self._owners) if o.moving}
        return {k: self._owners[n] for k, n in self._index.items() if n in moving} if moving else {}


class BadDirectoryFile(ValueError):
    """A directory file's problem, naming the file and the line."""


def parse_file(data: bytes, source: str, shards: Collection[str] | None) -> OwnerTable:
    """A directory file: CSV lines ``key,owner`` (a first line ``key,shard`` is a
    header) or JSON lines ``{"key": ..., "shard": ...}``; ``#`` lines and blank
    lines are skipped. Every problem is collected: the message names the
    file, each bad line and what is wrong with it."""
    text = data.decode("utf-8-sig")
    problems: list[str] = []
    entries = list(_entries(text, source, shards, problems))
    if problems:
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise BadDirectoryFile("\n  ".join([f"{source}: {len(problems)} bad line(s):", *shown])
                               + more)
    return OwnerTable(entries)


def _entries(text: str, source: str, shards: Collection[str] | None,
             problems: list[str]) -> Iterator[tuple[str, Owner]]:
    cache: dict[str, Owner] = {}  # a million lines name few distinct owners
    json_lines = text.lstrip().startswith("{")
    rows: Iterable[tuple[int, list[str] | str]]
    if json_lines:
        rows = enumerate(text.splitlines(), 1)
    else:
        rows = enumerate(csv.reader(io.StringIO(text)), 1)
    for number, row in rows:
        where = f"{source}:{number}"
        if json_lines:
            assert isinstance(row, str)
            if not row.strip() or row.lstrip().startswith("#"):
                continue
            try:
                obj = json.loads(row)
                key, value = obj["key"], obj["shard"]
                if not isinstance(key, (str, int)) or isinstance(key, bool) \
                        or not isinstance(value, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                problems.append(f"{where}: must be a JSON object "
                                '{"key": "...", "shard": "shard" or "source>target"}')
                continue
            key = str(key)
        else:
            assert isinstance(row, list)
            if not row or (len(row) == 1 and not row[0].strip()) or row[0].startswith("#"):
                continue
            if len(row) != 2:
                problems.append(f"{where}: must be 'key,shard' or 'key,source>target' "
                                f"(has {len(row)} fields)")
                continue
            key, value = row[0].strip(), row[1].strip()
            if number == 1 and (key, value) == ("key", "shard"):
                continue
        if not key:
            problems.append(f"{where}: the key is empty")
            continue
        owner = cache.get(value)
        if owner is None:
            try:
                owner = cache[value] = parse_owner(value, shards)
            except BadEntry as e:
                problems.append(f"{where}: {e}")
                continue
        yield key, owner


# -- placement of a key no shard owns -------------------------------------------------


def _unit(key: str, shard: str) -> float:
    """A uniform number in (0, 1) for the pair, the same on every gateway."""
    digest = hashlib.blake2b(f"{shard}\x00{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 1) / (2**64 + 1)


def rendezvous(key: str, candidates: Sequence[tuple[str, float]]) -> str:
    """Weighted rendezvous (highest random weight) hashing: the shard with the
    highest ``-weight / ln(u)``. Every gateway with the same candidates picks the
    same shard for a key, and a candidate added or removed moves only the keys
    it wins or held."""
    if not candidates:
        raise ValueError("no shard accepts new tenants")
    return max(candidates, key=lambda c: (-c[1] / math.log(_unit(key, c[0])), c[0]))[0]


# -- what routing needs from the shell --------------------------------------------------


class Pending(Exception):
    """A routing step needs the directory first: owners to fetch (``keys``), or
    a new key to record on a shard (``place``: (key, shard)). The shell does
    it, then runs the step again; then the lookups answer from memory."""

    def __init__(self, kind: str, keys: Sequence[str] = (),
                 place: tuple[str, str] | None = None) -> None:
        super().__init__(kind, keys, place)
        self.kind, self.keys, self.place = kind, tuple(keys), place


def placement(rule: str, key: str, shards: Sequence[tuple[str, bool, float]]) -> str | None:
    """Where a route's ``placement`` puts a key no shard owns (None: reject).
    ``shards``: (name, accepts_new, weight) of every shard."""
    if rule == "reject":
        return None
    if rule.startswith("shard:"):
        return rule[6:]
    return rendezvous(key, [(name, weight) for name, accepts, weight in shards if accepts])
