"""Partner API keys: their form, their hashes, and who may do what.

A key is ``ssk_<id>_<secret>``: the id (8 hex digits) is public and finds
the key's entry; the secret (32 random bytes, base64url) is never stored.
The keys file keeps, per partner, the SHA-256 of each whole key (a key of
256 random bits needs no slow hash: there is nothing to guess), its scopes,
and its limits. A presented key is hashed and compared with the entry's
hash in constant time; an unknown id is compared with a dummy hash, so the
time taken says nothing about which ids exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Mapping

from .config import SHARD_NAME, ConfigError, Table, check
from .errors import Forbidden, Unauthorized

KEY = re.compile(r"^ssk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}\Z")
HASH = re.compile(r"^sha256:[0-9a-f]{64}\Z")
READ_METHODS = frozenset({"GET", "HEAD"})
ACCESS = ("read", "write", "all")
_DUMMY = "sha256:" + "0" * 64


def new_key() -> tuple[str, str]:
    """A fresh ``(id, key)``."""
    key_id = secrets.token_hex(4)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return key_id, f"ssk_{key_id}_{secret}"


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Scope:
    path: str  # a route's path template, as in the config
    access: str  # read (GET, HEAD), write (the other methods), or all

    def allows(self, path: str, method: str) -> bool:
        if path != self.path:
            return False
        if self.access == "all":
            return True
        return (method in READ_METHODS) == (self.access == "read")

    def __str__(self) -> str:
        return self.path if self.access == "all" else f"{self.path}:{self.access}"


@dataclass(frozen=True)
class KeyEntry:
    id: str
    hash: str
    created: str = ""


@dataclass(frozen=True)
class Partner:
    name: str
    scopes: tuple[Scope, ...]
    keys: tuple[KeyEntry, ...]
    rate: float | None = None  # requests per second (rate limiting)
    burst: int | None = None
    concurrency: int | None = None  # list streams in flight

    def allows(self, path: str, method: str) -> bool:
        return any(scope.allows(path, method) for scope in self.scopes)


@dataclass(frozen=True)
class KeyStore:
    source: str
    partners: tuple[Partner, ...]

    def __post_init__(self) -> None:
        by_id = {entry.id: (partner, entry) for partner in self.partners for entry in partner.keys}
        object.__setattr__(self, "_by_id", by_id)

    def lookup(self, key: str) -> Partner | None:
        """The partner whose key this is, or None."""
        m = KEY.match(key)
        found = self._by_id.get(m.group(1)) if m else None  # type: ignore[attr-defined]
        expected = found[1].hash if found else _DUMMY
        if hmac.compare_digest(hash_key(key), expected) and found:
            partner: Partner = found[0]
            return partner
        return None


def parse_scope(text: str) -> Scope:
    """``PATH``, ``PATH:read`` or ``PATH:write``; raises ValueError."""
    path, sep, access = text.rpartition(":")
    if not sep or access not in ("read", "write") or not path:
        path, access = text, "all"
    if not path.startswith("/"):
        raise ValueError(f"{text!r}: a scope is a route's path, optionally with :read or :write")
    return Scope(path, access)


def parse(data: Mapping[str, Any], source: str, routes: set[str] | None = None) -> KeyStore:
    """Validate a decoded keys file; ``routes``: the config's route paths,
    which every scope must name."""
    problems: list[ConfigError] = []
    top = Table(source, "", dict(data), problems)
    nobody: tuple[Partner, ...] = ()
    partners = check(lambda: _partners(top.table("partners"), routes), nobody)
    check(top.done, None)
    if problems:
        raise ConfigError.combine(problems)
    return KeyStore(source, partners)


def _partners(t: Table, routes: set[str] | None) -> tuple[Partner, ...]:
    out = []
    seen_ids: set[str] = set()
    for name in t.data:
        if not SHARD_NAME.match(name):
            t.seen.add(name)
            t.note(name, "a partner name may only use letters, digits, '_' and '-'")
            continue

        def one(name: str = name) -> Partner | None:
            return _partner(t.table(name), name, routes, seen_ids)

        partner = check(one, None)
        if partner is not None:
            out.append(partner)
    t.done()
    return tuple(out)


def _partner(t: Table, name: str, routes: set[str] | None, seen_ids: set[str]) -> Partner:
    scopes = []
    for text in t.strings("scopes"):
        try:
            scope = parse_scope(text)
        except ValueError as e:
            t.fail("scopes", str(e))
        if routes is not None and scope.path not in routes:
            t.fail("scopes", f"{scope.path!r} is not the path of any route in the config")
        scopes.append(scope)
    rate = t.number("rate", None)
    burst = t.number("burst", None, integer=True)
    concurrency = t.number("concurrency", None, integer=True)
    keys = []
    raw = t.get("keys", [])
    if not isinstance(raw, list):
        t.fail("keys", "must be a list of tables ([[partners.NAME.keys]])")
    for i, entry in enumerate(raw):
        kt = Table(t.source, t.path(f"keys[{i}]"), entry, t.problems)
        key_id, digest = kt.string("id"), kt.string("hash")
        created = kt.string("created", "")
        kt.done()
        if not re.fullmatch(r"[0-9a-f]{8}", key_id):
            kt.fail("id", f"{key_id!r} is not a key id (8 hex digits)")
        if key_id in seen_ids:
            kt.fail("id", f"key id {key_id} is listed twice")
        if not HASH.match(digest):
            kt.fail("hash", "must be sha256: and 64 hex digits (the file never holds a key)")
        seen_ids.add(key_id)
        keys.append(KeyEntry(key_id, digest, created))
    t.done()
    return Partner(name, tuple(scopes), tuple(keys), rate, burst, concurrency)


def authorize(store: KeyStore, authorization: str | None, other: str | None,
              route: str | None, method: str) -> Partner:
    """The partner making a request, if it may: ``authorization`` is the
    Authorization header, ``other`` the configured key header, ``route`` the
    matched route's path (None: no route matches, answered after the key)."""
    key = None
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
    if key is None and other:
        key = other.strip()
    if key is None:
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")
    partner = store.lookup(key)
    if partner is None:
        raise Unauthorized("the API key is not valid (unknown, revoked or malformed)")
    if route is not None and not partner.allows(route, method):
        raise Forbidden(f"partner {partner.name} may not {method} {route}",
                        partner=partner.name)
    return partner
