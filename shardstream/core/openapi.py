"""The OpenAPI 3.1 document of a running config (``/openapi.json``).

Made from the config, so it always says what this gateway answers: every
route with its path parameters (global ids with their format), a list's
query parameters (its sort keys, its limits), the list envelope and the
NDJSON form, the errors the gateway makes itself, the security scheme and
the rate-limit fields. What a shard answers on a relayed route is the
shard's own API, described as "any JSON" here.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from .config import Config, Route
from .paging import options

GLOBAL_ID = r"^[A-Za-z0-9_-]{1,64}~(i-?[0-9]+|r[A-Za-z0-9._-]+|b[A-Za-z0-9_-]+)$"
_OPERATIONS = ("get", "head", "post", "put", "patch", "delete", "options")


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "headers": _headers(),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _headers() -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"}
            for name in ("X-Request-ID", "RateLimit", "RateLimit-Policy")}


def _gateway_errors(config: Config, *codes: int) -> dict[str, Any]:
    texts = {400: "a bad request (bad_request, bad_query, bad_global_id, bad_path, "
                  "bad_cursor, no_owner, cross_shard_reference ...)",
             401: "no API key, or not a valid one (unauthorized)",
             403: "the partner's scopes do not include this route and method (forbidden)",
             404: "no route (not_found), or no shard for the id or key (unknown_shard, "
                  "unknown_shard_key)",
             405: "the route does not answer this method (method_not_allowed)",
             413: "the request body is over the limit (body_too_large)",
             429: "over the partner's rate or concurrency limit (rate_limited, "
                  "concurrency_limited), with Retry-After",
             502: "the shards failed (shards_failed, shard_unavailable)",
             503: "try again after Retry-After: a list page has no items because only failed "
                  "shards still have some (shards_unavailable, with the cursor to retry), "
                  "the rate limits cannot be checked (rate_limit_unavailable), a tenant "
                  "is moving (tenant_moving)",
             504: "the shards timed out (shards_timeout, shard_timeout)"}
    out = {str(code): _error(texts[code]) for code in codes}
    if config.auth is None:
        out.pop("401", None)
        out.pop("403", None)
        out.pop("429", None)
    return out


def _path_parameters(config: Config, route: Route) -> list[dict[str, Any]]:
    out = []
    gid = route.owner.global_id if route.owner is not None else None
    for name in route.params:
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        description = "a path segment"
        if name == gid:
            schema["pattern"] = GLOBAL_ID
            description = ("a global id: SHARD~i<integer>, SHARD~r<text of A-Za-z0-9._->, "
                           "or SHARD~b<base64url>")
        elif route.owner is not None and route.owner.shard_key == name:
            dc = config.directory.get(name)
            table = dc.table if dc is not None else None
            if table is not None and len(table) <= 1000 and route.owner.placement == "reject":
                schema["enum"] = sorted(table)
            description = f"a key of the {name} directory"
        out.append({"name": name, "in": "path", "required": True, "schema": schema,
                    "description": description})
    return out


def _list_operation(config: Config, route: Route) -> dict[str, Any]:
    o = options(route)
    limit: dict[str, Any] = {"type": "integer", "minimum": 0}
    if o.max_limit is not None:
        limit["maximum"] = o.max_limit
    query = [
        {"name": "limit", "in": "query", "schema": limit, "description": "items on this page"},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0},
         "description": "items to skip (not with cursor)"},
        {"name": "cursor", "in": "query", "schema": {"type": "string"},
         "description": "meta.next_cursor of the page before (signed)"},
        {"name": "partial", "in": "query", "schema": {"type": "string",
                                                      "enum": ["true", "false"]},
         "description": "false: a shard's failure fails the response (strict)"},
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
    return {"operationId": _operation_id("list", route), "summary": f"list {route.path.text}",
            "parameters": query, "responses": {"200": ok, **_gateway_errors(
                config, 400, 401, 403, 429, 502, 503, 504)}}


def _operation_id(verb: str, route: Route) -> str:
    text = route.path.text.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    return f"{verb}_{text or 'root'}"


def _relay_operation(config: Config, route: Route, method: str) -> dict[str, Any]:
    # A relayed answer may have any status and body (the shard's API); the
    # gateway's own errors at the same statuses have the Error shape.
    errors = _gateway_errors(config, 400, 401, 403, 404, 405, 413, 429, 502, 503, 504)
    for answer in errors.values():
        answer["description"] += "; or the shard's own answer with this status, relayed"
        answer["content"] = {"application/json": {"schema": {
            "anyOf": [{"$ref": "#/components/schemas/Error"}, {}]}}}
    op: dict[str, Any] = {
        "operationId": _operation_id(method, route),
        "summary": f"{method.upper()} {route.path.text} on the shard that owns it",
        "responses": {"default": {"description": "the owning shard's answer, relayed",
                                  "headers": _headers(),
                                  "content": {"application/json": {"schema": {}}}},
                      **errors},
    }
    if method in ("post", "put", "patch"):
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": {}}}}
    return op


def document(config: Config) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in config.routes:
        if route.path.prefix:
            continue  # every path under a prefix: OpenAPI has no way to say so
        item = paths.setdefault(route.path.text, {})
        parameters = _path_parameters(config, route)
        if parameters:
            item["parameters"] = parameters
        methods = sorted(m.lower() for m in route.methods) if route.methods else _OPERATIONS
        for method in methods:
            if method in item or method not in _OPERATIONS:
                continue  # an earlier route answers it (routes are tried in order)
            item[method] = (_list_operation(config, route) if route.mode == "scatter"
                            else _relay_operation(config, route, method))
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "shardstream gateway", "version": __version__,
                 "description": "Every shard's API as one application (generated from the "
                                "gateway's config)."},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "object", "required": ["code", "message"],
                              "properties": {"code": {"type": "string"},
                                             "message": {"type": "string"}}}}},
                "FailedShard": {"type": "object", "required": ["shard", "error"],
                                "properties": {"shard": {"type": "string"},
                                               "error": {"type": "string"},
                                               "message": {"type": "string"},
                                               "status": {"type": ["integer", "null"]},
                                               "attempts": {"type": "integer"},
                                               "items_delivered": {"type": "integer"}}},
                "List": {"type": "object", "required": ["data", "meta"], "properties": {
                    "data": {"type": "array", "items": {}},
                    "meta": {"type": "object", "required": ["shards", "complete"], "properties": {
                        "shards": {"type": "object", "required": ["total", "succeeded",
                                                                  "failed"],
                                   "properties": {"total": {"type": "integer"},
                                                  "succeeded": {"type": "integer"},
                                                  "failed": {"type": "array", "items": {
                                                      "$ref": "#/components/schemas/"
                                                              "FailedShard"}}}},
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
            },
        },
    }
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
