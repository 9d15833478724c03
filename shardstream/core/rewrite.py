"""The bodies of one-shard requests: which need rewriting, and the rewrite.

Sans-IO. A write's body may name its owner (``shard_key_body``) and carry
global ids, which go back to the shard as its own local ids; a relayed
response carries local ids, which go to the client as global ids. Numbers
keep their exact value both ways.
"""

from __future__ import annotations

from typing import Any

from . import ids
from .config import Route
from .encode import encode_value, loads
from .errors import ClientError
from .retry import BODY_METHODS
from .routing import Router


class BadBody(ClientError):
    status = 400
    code = "bad_body"


class CrossShard(ClientError):
    status = 400
    code = "cross_shard_reference"


def streams_body(route: Route, method: bytes) -> bool:
    """Can this route-mode request's body go to the shard unread?"""
    body_owner = route.owner is not None and route.owner.shard_key_body is not None
    return not body_owner and not (route.id_fields and method in BODY_METHODS)


def _resource(route: Route, doc: Any) -> Any:
    """The resource object inside a body (``item`` of the route), or None."""
    item = route.relay.item if route.relay is not None else None
    return item.lookup(doc) if item is not None else None


def request_body(router: Router, route: Route, target: tuple[str, bytes] | None, body: bytes,
                 uri: bytes, method: str = "POST") -> tuple[str, bytes, bytes]:
    """``(shard, path, body)`` of a write whose body must be read: the owner
    from the body if the route says so, and its global ids made local."""
    try:
        doc = loads(body) if body else None
    except (ValueError, RecursionError):
        raise BadBody("the request body is not valid JSON") from None
    field = route.owner.shard_key_body if route.owner is not None else None
    if field is not None:
        if not isinstance(doc, dict):
            raise BadBody("the request body must be a JSON object")
        shard, path = router.body_owner(route, doc, method), uri
    else:
        assert target is not None
        shard, path = target
    named: set[str] = set()
    if field is not None:  # a path from the body's root
        named |= ids.localize(doc, [field])
    if route.id_fields:  # paths inside the resource object (route.item), else the root
        obj = _resource(route, doc)
        named |= ids.localize(obj if obj is not None else doc, route.id_fields)
    others = sorted(named - {shard})
    if others:
        raise CrossShard(f"the body refers to shard {others[0]!r} but the write goes to shard "
                         f"{shard!r}; nothing was written")
    try:
        return shard, path, encode_value(doc)
    except Exception:
        raise BadBody("the request body cannot be re-encoded (nested too deeply, or a lone "
                      "surrogate in a string)") from None


def response_body(route: Route, shard: str, body: bytes) -> bytes | None:
    """A shard's 2xx body with global ids, or None when it cannot be rewritten
    (local ids must never leak as if they were global)."""
    if not body.strip():
        return body  # nothing to rewrite (e.g. 204)
    try:
        doc = loads(body)
        item = route.relay.item if route.relay is not None else None
        target = item.lookup(doc) if item is not None else doc
        if target is None:
            return body
        ids.globalize(target, route.id_fields, shard)
        return encode_value(doc)
    except Exception:
        return None
