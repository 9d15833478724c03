"""The OpenAPI 3.1 document of a running config (``/openapi.json``).

Made from the config, so it always says what this gateway answers: every
route with its path parameters (global ids with their format, restricted to
the configured shards), a list's query parameters (its sort keys, the bounds
the gateway enforces on ``limit`` and ``offset``), the list envelope and the
NDJSON form, the errors the gateway makes itself (with ``Retry-After`` where
it sends one), the security scheme and the rate-limit fields. What a shard
answers on a relayed route is the shard's own API, described as "any JSON"
(or any media type) here.

OpenAPI has no path template for "every path under /v3/reference/": prefix
routes and ``[fallback]`` are described under the root extension
``x-shardstream-prefix-routes`` (and in ``info.description``), each with the
operations it answers, in the shape of a path item.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .. import __version__
from .config import SHARD_NAME, Config, DirectoryConfig, Route
from .paging import options
from .routing import READS

_OPERATIONS = ("get", "head", "post", "put", "patch", "delete", "options")
PREFIX_ROUTES = "x-shardstream-prefix-routes"

# paging._DIGITS: limit and offset are 1 to 18 decimal digits.
_MAX_COUNT = 10 ** 18 - 1

# The global id grammar of ids.decode, which accepts exactly one spelling per
# id: i<integer> in its canonical decimal form, r<text of [A-Za-z0-9._-]>, or
# b<unpadded base64url of the UTF-8 text>.
_B64 = "[A-Za-z0-9_-]"
_B64_2 = "[AQgw]"  # last of 2 chars (1 byte): its low 4 bits are padding, zero
_B64_3 = "[AEIMQUYcgkosw048]"  # last of 3 chars (2 bytes): its low 2 bits are zero
# The first char holds the first byte's top 6 bits: never a UTF-8 continuation
# byte (0x80-0xBF: g-v) nor 0xF8-0xFF ('-', '_'); a lone byte is ASCII (A-f).
_B64_LEAD = "[A-Za-fw-z0-9]"
_BASE64_TEXT = (f"(?:[A-Za-f]{_B64_2}|{_B64_LEAD}(?:{_B64}{_B64_3}|{_B64}{{3}}(?:{_B64}{{4}})*"
                f"(?:{_B64}{_B64_2}|{_B64}{{2}}{_B64_3})?))")
# What the pattern still lets through and ids.decode refuses (400
# bad_global_id): b-bodies whose bytes are not UTF-8 past the first byte
# (a regular language, but its regex over base64 would be enormous), and
# b-bodies of a text the r form spells (made only of [A-Za-z0-9._-]): such a
# text has its r spelling only. Each id the gateway issues matches it.
_LOCAL_ID = f"(?:i(?:0|-?[1-9][0-9]*)|r[A-Za-z0-9._-]+|b{_BASE64_TEXT})"


def global_id_pattern(shards: Iterable[str] | None = None) -> str:
    """The pattern of a global id of one of ``shards`` (None: any shard name)."""
    names = sorted(set(shards)) if shards is not None else []
    if names and all(SHARD_NAME.match(n) for n in names):  # no regex metacharacters
        shard = "(?:" + "|".join(names) + ")"
    else:
        shard = "[A-Za-z0-9_-]{1,64}"
    return f"^{shard}~{_LOCAL_ID}$"


GLOBAL_ID = global_id_pattern()

# status: what it means, for the description.
_MEANING = {
    400: "a bad request",
    401: "no API key, or not a valid one (with WWW-Authenticate)",
    403: "the partner's scopes do not include this route and method",
    404: "no shard for the id or key, or no shard has it",
    408: "the request's head did not arrive within server.header_timeout (the connection "
         "closes)",
    409: "a cursor page whose keys' owners changed since the cursor was issued (a tenant "
         "moved): start the list again without the cursor",
    410: "the cursor holds the position of a shard that is gone: start the list again without "
         "the cursor",
    413: "the request body is over the route's max_body (or server.max_body)",
    414: "the request line is over server.max_header_bytes (the connection closes)",
    429: "over the partner's rate or concurrency limit: try again after Retry-After",
    431: "the request's headers are over server.max_header_bytes or server.max_headers (the "
         "connection closes)",
    502: "the shards failed (named in the body)",
    503: "try again after Retry-After",
    504: "the shards timed out (named in the body)",
}
# Codes of an answer that tells a shard failed (and names it): a 502/504/503
# with one of them is the shards', not the gateway failing itself.
SHARD_FAILURE_CODES = {
    502: ("shards_failed", "shard_failed", "shard_unavailable", "bad_shard_response",
          "response_too_large"),
    503: ("shards_unavailable",),
    504: ("shards_timeout", "shard_timeout"),
}
# A shard's common 4xx, when every shard asked answered it: the client's answer.
SHARDS_REJECTED = "shards_rejected"


def _error_schema(codes: Iterable[str] | None = None, *, names_shards: bool = False
                  ) -> dict[str, Any]:
    """The Error schema, its code one of ``codes`` (None: any); ``names_shards``:
    the body names the shards that failed in meta.shards.failed."""
    ref = {"$ref": "#/components/schemas/Error"}
    if codes is None and not names_shards:
        return ref
    error: dict[str, Any] = {}
    if codes is not None:
        error["properties"] = {"code": {"enum": sorted(set(codes))}}
    if names_shards:
        error["required"] = ["meta"]
        error.setdefault("properties", {})["meta"] = {"required": ["shards"], "properties": {
            "shards": {"required": ["failed"], "properties": {"failed": {"minItems": 1}}}}}
    return {"allOf": [ref, {"properties": {"error": error}}]}


def _headers(retry_after: str = "") -> dict[str, Any]:
    """The fields of an answer; ``retry_after``: "always" (a required
    Retry-After), "maybe" (one that may be there), or "" (none)."""
    out: dict[str, Any] = {name: {"$ref": f"#/components/headers/{name}"}
                           for name in ("X-Request-ID", "RateLimit", "RateLimit-Policy")}
    if retry_after == "maybe":
        out["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    elif retry_after == "always":  # a Reference Object cannot say required
        out["Retry-After"] = {"required": True, "schema": {"type": "integer", "minimum": 0},
                              "description": _RETRY_AFTER}
    return out


_RETRY_AFTER = "seconds to wait before trying again"


def _closed_keys(dc: DirectoryConfig | None, route: Route) -> list[str] | None:
    """Every key a request may name, when the config lists them all: an inline
    table (a file or Redis holds keys the config does not show), no finding
    unknown keys, no placing new ones, and a short enough list."""
    if dc is None or dc.table is None or dc.file is not None or dc.redis_url is not None:
        return None
    if dc.unknown != "404" or route.owner is None or route.owner.placement != "reject":
        return None
    return sorted(dc.table) if len(dc.table) <= 1000 else None


def _gateway_codes(config: Config, route: Route, method: str = "get"
                   ) -> dict[int, tuple[str, ...]]:
    """The error codes the gateway itself answers on this route and method, by status."""
    limited = (config.auth is not None and config.rate_limit.backend == "redis"
               and config.rate_limit.on_redis_down == "closed")
    remote = any(dc.table is None for dc in config.directory.values())
    try_later = (("rate_limit_unavailable",) if limited else ()) + (
        ("directory_unavailable",) if remote else ())
    codes: dict[int, tuple[str, ...]] = {
        400: ("bad_request", "bad_path"),
        408: ("request_timeout",), 413: ("body_too_large",), 414: ("uri_too_long",),
        431: ("headers_too_large",),
    }
    if config.auth is not None:
        codes |= {401: ("unauthorized",), 403: ("forbidden",),
                  429: ("rate_limited", "concurrency_limited")}
    if route.mode == "scatter":
        codes[400] += ("invalid_cursor",)
        codes |= {409: ("cursor_owners_changed",), 410: ("cursor_shard_gone",),
                  502: ("shards_failed", "shard_failed"), 504: ("shards_timeout", "shard_timeout"),
                  503: ("shards_unavailable",) + try_later}
        return codes
    owner = route.owner
    kind = owner.kind if owner is not None else None
    dc = config.directory.get(kind) if kind is not None else None
    # find and any routes ask several shards; a read for a key no entry names
    # is a find when its directory says so.
    several = route.mode in ("find", "any") or (dc is not None and dc.unknown == "find")
    not_found: tuple[str, ...] = ()
    if owner is not None and (owner.global_id is not None or owner.shard_key_body is not None):
        codes[400] += ("bad_global_id",)
        not_found += ("unknown_shard",)
    if owner is not None and owner.shard_key is not None:
        not_found += ("unknown_shard_key",)  # a body's key no shard owns is no_owner (400)
    if kind is not None and method.upper() not in READS:
        try_later += ("tenant_moving",)  # a write waits while its tenant moves
    if owner is not None and owner.shard_key_body is not None:
        codes[400] += ("no_owner",)
    if route.id_fields or (owner is not None and owner.shard_key_body is not None):
        codes[400] += ("bad_body", "cross_shard_reference")
    if several:
        not_found += ("not_found",)  # no shard has it
    if not_found:
        codes[404] = not_found
    codes[502] = ("shard_unavailable", "bad_shard_response", "response_too_large") + (
        ("shards_failed",) if several else ())
    codes[504] = ("shard_timeout",) + (("shards_timeout",) if several else ())
    if try_later:
        codes[503] = try_later
    return codes


def _describe(status: int, codes: Iterable[str]) -> str:
    return f"{', '.join(codes)}: {_MEANING[status]}"


_LIST_NOTES = {
    429: " (shards_rejected comes without Retry-After)",
    503: " (shards_unavailable: this page would have no items because only failed shards "
         "still have some; the body's cursor is the one to retry)",
}


def _list_errors(config: Config, route: Route) -> dict[str, Any]:
    """A list's errors: every one is the gateway's own answer."""
    out: dict[str, Any] = {}
    for status, codes in sorted(_gateway_codes(config, route).items()):
        if status < 500:  # every shard asked answered this 4xx: the client's answer too
            codes += (SHARDS_REJECTED,)
        # Every 503 here has Retry-After; a 429 of shards_rejected has not.
        retry_after = {429: "maybe", 503: "always"}.get(status, "")
        out[str(status)] = {
            "description": _describe(status, codes) + _LIST_NOTES.get(status, ""),
            "headers": _headers(retry_after),
            "content": {"application/json": {"schema": _error_schema(
                codes, names_shards=status in (502, 504))}}}
    out["4XX"] = {"description": "every shard asked answered this same 4xx (shards_rejected)",
                  "headers": _headers(),
                  "content": {"application/json": {"schema": _error_schema([SHARDS_REJECTED])}}}
    return out


# A relayed answer has the shard's own media type, whatever it is.
_SHARDS_OWN: dict[str, Any] = {"*/*": {"schema": {}}}


def _relay_errors(config: Config, route: Route, method: str) -> dict[str, Any]:
    """A relayed route's errors: the gateway's own at these statuses have the
    Error shape; the shard's own answer with the same status is relayed."""
    out: dict[str, Any] = {}
    for status, codes in sorted(_gateway_codes(config, route, method).items()):
        # The gateway's 429 and 503 have Retry-After; a relayed one, if the shard sent it.
        out[str(status)] = {
            "description": _describe(status, codes)
            + "; or the shard's own answer with this status, relayed",
            "headers": _headers("maybe" if status in (429, 503) else ""),
            "content": {"application/json": {"schema": {"anyOf": [_error_schema(), {}]}},
                        **_SHARDS_OWN}}
    return out


def _segment_schema() -> dict[str, Any]:
    # A segment decodes to neither '.' nor '..', and holds no '/' or '\' (400 bad_path).
    return {"type": "string", "minLength": 1, "pattern": r"^[^/\\]+$",
            "not": {"enum": [".", ".."]}}


def _path_parameters(config: Config, route: Route) -> list[dict[str, Any]]:
    out = []
    gid = route.owner.global_id if route.owner is not None else None
    for name in route.params:
        schema = _segment_schema()
        description = "a path segment"
        if name == gid:
            schema = {"type": "string", "pattern": global_id_pattern(config.shard_names)}
            description = ("a global id: SHARD~i<integer>, SHARD~r<text of A-Za-z0-9._->, or "
                           "SHARD~b<base64url of any other text, unpadded>, in the one "
                           "spelling the gateway issues (SHARD: a configured shard)")
        elif route.owner is not None and route.owner.shard_key == name:
            keys = _closed_keys(config.directory.get(name), route)
            if keys is not None:
                schema = {"type": "string", "enum": keys}
            description = f"a key of the {name} directory"
        out.append({"name": name, "in": "path", "required": True, "schema": schema,
                    "description": description})
    return out


def _list_operation(config: Config, route: Route, method: str = "get") -> dict[str, Any]:
    o = options(route)
    # paging.parse: limit is 1 .. max_limit, offset 0 .. (18 digits), both plain decimals.
    limit_max = min(o.max_limit, _MAX_COUNT) if o.max_limit is not None else _MAX_COUNT
    limit: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": limit_max}
    default = o.default_limit or o.max_limit
    limit_text = "items on this page" + (f" (default {default})" if default else "")
    query = [
        {"name": "limit", "in": "query", "schema": limit, "description": limit_text},
        {"name": "offset", "in": "query",
         "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_COUNT},
         "description": "items to skip (not with cursor)"},
        {"name": "cursor", "in": "query",
         # base64url(payload of 12 bytes or more) "." base64url(a 12-byte MAC)
         "schema": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16}$"},
         "description": "meta.next_cursor of the page before (signed: only one this gateway "
                        "issued is accepted)"},
        {"name": "partial", "in": "query", "schema": {"type": "string",
                                                      "enum": ["true", "false"]},
         "description": "false: a shard's failure fails the response (strict); default "
                        f"{'true' if o.partial else 'false'}"},
    ]
    if o.target_param is not None and o.target_param not in route.params:
        query.append({"name": o.target_param, "in": "query", "schema": {"type": "string"},
                      "description": "only these owners' items (comma-separated): only "
                                     "their shards are asked"})
    keys = [str(p) for p in o.sort]
    if keys:
        query.append({"name": "sort", "in": "query",
                      "schema": {"type": "string",
                                 "enum": keys + [f"-{k}" for k in keys]},
                      "description": "merge order across shards; '-' for descending"})
    ok = {"description": "the merged list, streamed as the shards answer",
          "headers": _headers(),
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/List"}},
                      "application/x-ndjson": {"schema": {
                          "type": "string", "description": "one item per line, the meta "
                                                           "last (Accept: application/x-ndjson)"}}}}
    verb = "list" if method == "get" else f"{method}_list"
    return {"operationId": _operation_id(verb, route), "summary": f"list {route.path.text}",
            "parameters": query, "responses": {"200": ok, **_list_errors(config, route)}}


def _operation_id(verb: str, route: Route) -> str:
    text = route.path.text.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    suffix = "_fallback" if route.key == "fallback" else "_under" if route.path.prefix else ""
    return f"{verb}_{text or 'root'}{suffix}"


def _body_schema(config: Config, route: Route) -> dict[str, Any]:
    """A write whose owner is a field of its JSON body: the body must have it."""
    owner = route.owner
    if owner is None or owner.shard_key_body is None:
        return {}
    field = owner.shard_key_body
    gid = {"type": "string", "pattern": global_id_pattern(config.shard_names)}
    keys = _closed_keys(config.directory.get(field.text), route)
    value: dict[str, Any]
    if keys is not None:  # a number is looked up as its text: 100 for the key "100"
        numbers = [int(k) for k in keys if re.fullmatch(r"0|-?[1-9][0-9]*", k)]
        value = {"anyOf": [{"type": "string", "enum": keys}, gid]
                 + ([{"type": "integer", "enum": numbers}] if numbers else [])}
    else:  # a string with '~' is read as a global id
        value = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": "^[^~]+$"}, gid]}
    value["description"] = f"names the owner: a key of the {field.text} directory, or a global id"
    schema = value
    for part in reversed(field.parts):
        schema = {"type": "object", "required": [part], "properties": {part: schema}}
    return schema


def _relay_operation(config: Config, route: Route, method: str) -> dict[str, Any]:
    # A relayed answer may have any status and body (the shard's API); the
    # gateway's own errors at the same statuses have the Error shape.
    what = {"find": "on the shard that has it (every shard is asked)",
            "any": "on any shard (tried in turn)"}.get(route.mode, "on the shard that owns it")
    op: dict[str, Any] = {
        "operationId": _operation_id(method, route),
        "summary": f"{method.upper()} {route.path.text} {what}",
        "responses": {"default": {"description": "the shard's answer, relayed",
                                  "headers": _headers(),
                                  "content": {"application/json": {"schema": {}},
                                              **_SHARDS_OWN}},
                      "204": {"description": "the shard's answer, relayed: no content",
                              "headers": _headers()},
                      **_relay_errors(config, route, method)},
    }
    if method in ("post", "put", "patch"):
        body = _body_schema(config, route)
        op["requestBody"] = {"required": bool(body),
                             "content": {"application/json": {"schema": body}}}
    return op


def _operations(config: Config, route: Route, methods: Iterable[str]) -> dict[str, Any]:
    return {m: (_list_operation(config, route, m) if route.mode == "scatter"
                else _relay_operation(config, route, m)) for m in methods}


def _methods(route: Route) -> list[str]:
    if route.methods is None:
        return list(_OPERATIONS)
    return [m for m in _OPERATIONS if m.upper() in route.methods]


def _prefix_route(config: Config, route: Route) -> dict[str, Any]:
    fallback = route.key == "fallback"
    methods = _methods(route)
    entry: dict[str, Any] = {
        "prefix": route.path.text,
        "description": ("[fallback]: every path no route names" if fallback else
                        f"{route.key}: every path under {route.path.text}")
        + " (routes are tried in config order: a path an earlier route names is that "
          "route's)",
        "mode": route.mode,
        "methods": [m.upper() for m in methods] if route.methods is not None else "any",
    }
    if fallback:
        entry["fallback"] = True
    parameters = _path_parameters(config, route)
    if parameters:
        entry["parameters"] = parameters
    entry["operations"] = _operations(config, route, methods)
    return entry


_DESCRIPTION = (
    "Every shard's API as one application (generated from the gateway's config). "
    "Routes are tried in config order. A path no route names gets 404 not_found (or the "
    "[fallback] route); a method none of a path's routes answers gets 405 "
    "method_not_allowed, with Allow. Whatever the path: 408 request_timeout, 414 "
    "uri_too_long, 431 headers_too_large and 413 body_too_large before any route is "
    "asked, and 400 bad_request for a request that is not valid HTTP/1.1. Prefix routes "
    "(every path under a prefix) and [fallback] have no OpenAPI path template: they are "
    f"listed under {PREFIX_ROUTES}, each with its operations.")


def document(config: Config) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    prefixed: list[dict[str, Any]] = []
    for i, route in enumerate(config.routes):
        if route.path.prefix:
            prefixed.append(_prefix_route(config, route))
            continue
        # A method an earlier route answers on every path of this template is
        # that route's (a prefix over it, or the same template).
        earlier = [r for r in config.routes[:i] if r.path.match(route.path.text) is not None]
        methods = [m for m in _methods(route)
                   if not any(r.allows(m.upper()) for r in earlier)]
        if not methods:
            continue
        item = paths.setdefault(route.path.text, {})
        parameters = _path_parameters(config, route)
        operations = _operations(config, route, methods)
        if parameters and "parameters" not in item:
            item["parameters"] = parameters
        elif parameters and item["parameters"] != parameters:
            for op in operations.values():  # another route's parameters are the path's
                op["parameters"] = parameters + op.get("parameters", [])
        item.update(operations)
    if config.fallback is not None:
        prefixed.append(_prefix_route(config, config.fallback))
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "shardstream gateway", "version": __version__,
                 "description": _DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "shard": {"type": "string", "description": "the shard that failed "
                                                                   "(a relayed request)"},
                        "shard_error": {"type": "string"},
                        "failed": {"type": "array", "description": "the shards that failed "
                                   "(find and any routes)",
                                   "items": {"$ref": "#/components/schemas/FailedShard"}},
                        "not_found": {"type": "array", "items": {"type": "string"}},
                        "meta": {"type": "object", "description": "a list's shards, those "
                                 "that failed named (no page: no cursor, no totals)",
                                 "properties": {"shards": {
                                     "$ref": "#/components/schemas/ShardsMeta"}}},
                        "cursor": {"type": ["string", "null"],
                                   "description": "shards_unavailable: the cursor to retry"},
                        "retry_after": {"type": "integer"},
                        "allow": {"type": "array", "items": {"type": "string"}}}}}},
                "FailedShard": {"type": "object", "required": ["shard", "error"],
                                "properties": {"shard": {"type": "string"},
                                               "error": {"type": "string"},
                                               "message": {"type": "string"},
                                               "status": {"type": ["integer", "null"]},
                                               "attempts": {"type": "integer"},
                                               "items_delivered": {"type": "integer"}}},
                "ShardsMeta": {"type": "object", "required": ["total", "succeeded", "failed"],
                               "properties": {"total": {"type": "integer"},
                                              "succeeded": {"type": "integer"},
                                              "failed": {"type": "array", "items": {
                                                  "$ref": "#/components/schemas/FailedShard"}},
                                              "cancelled": {"type": "array",
                                                            "items": {"type": "string"}}}},
                "List": {"type": "object", "required": ["data", "meta"], "properties": {
                    "data": {"type": "array", "items": {}},
                    "meta": {"type": "object", "required": ["shards", "complete"], "properties": {
                        "shards": {"$ref": "#/components/schemas/ShardsMeta"},
                        "complete": {"type": "boolean", "description":
                                     "every shard asked succeeded: only the requested "
                                     "limit cut this page (next_cursor has the rest)"},
                        "total": {"type": ["integer", "null"]},
                        "total_excludes": {"type": "array", "items": {"type": "string"}},
                        "next_cursor": {"type": ["string", "null"]}}}}},
            },
            "headers": {
                "X-Request-ID": {"schema": {"type": "string"},
                                 "description": "the request's id: the client's, or made"},
                "RateLimit": {"schema": {"type": "string"}, "description":
                              'IETF draft: "default";r=REMAINING;t=RESET (limited partners)'},
                "RateLimit-Policy": {"schema": {"type": "string"}, "description":
                                     'IETF draft: "default";q=BURST;w=WINDOW'},
                "Retry-After": {"schema": {"type": "integer", "minimum": 0},
                                "description": _RETRY_AFTER + " (the gateway's answers "
                                "always have it; a shard's relayed answer, if the shard sent "
                                "it)"},
            },
        },
    }
    if prefixed:
        doc[PREFIX_ROUTES] = prefixed
    if config.auth is not None:
        schemes: dict[str, Any] = {"bearer": {"type": "http", "scheme": "bearer",
                                              "description": "a partner's API key"}}
        security: list[dict[str, list[str]]] = [{"bearer": []}]
        if config.auth.header:
            schemes["key"] = {"type": "apiKey", "in": "header", "name": config.auth.header}
            security.append({"key": []})
        doc["components"]["securitySchemes"] = schemes
        doc["security"] = security
    return doc
