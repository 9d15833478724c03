"""The OpenAPI document of a config: valid OpenAPI 3.1, and true to the config."""

from __future__ import annotations

import base64
import random
import re
import tomllib

import pytest
from openapi_spec_validator import validate

from configs import GOOD
from shardstream.core import config, ids, openapi


def _document(**change):
    data = tomllib.loads(GOOD)
    data["routes"][0]["sort"] = ["starts_at"]
    data["routes"][0]["max_limit"] = 50
    data.update(change)
    doc = openapi.document(config.parse(data, "<t>"))
    validate(doc)
    return doc


def test_the_document_of_a_config_is_valid_and_follows_it():
    doc = _document()
    events = doc["paths"]["/v3/events"]["get"]
    names = [p["name"] for p in events["parameters"]]
    assert names == ["limit", "offset", "cursor", "partial", "sort"]
    assert "security" not in doc and "401" not in events["responses"]  # no [auth] here
    vendor = doc["paths"]["/v3/vendors/{vendor_id}/events"]
    assert vendor["parameters"][0]["schema"]["enum"] == ["v100", "v200"]
    assert set(vendor) >= {"get", "post", "delete", "parameters"}  # route mode: any method
    assert openapi.PREFIX_ROUTES not in doc


def test_limit_and_offset_have_the_bounds_the_gateway_enforces():
    params = {p["name"]: p["schema"] for p in _document()["paths"]["/v3/events"]["get"][
        "parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 50}  # 0 is a 400
    assert params["offset"]["minimum"] == 0 and params["offset"]["maximum"] == 10 ** 18 - 1


def _pattern(shards=("s1", "s2")):
    # JSON Schema's $ is the end of the text (Python's would allow a last newline).
    return re.compile(openapi.global_id_pattern(shards).replace("$", r"\Z"))


@pytest.mark.parametrize("gid", [
    "0~i00664", "x~be", "s1~i00664", "s1~i-0", "s1~i+1", "s1~i", "s1~be", "s1~bZZ",
    "s1~bQR", "s1~r", "s1~r~", "~i1", "s1~x1", "s1~bg", "s1~b-A", "s1~i1\n",
])
def test_the_global_id_pattern_refuses_ids_the_gateway_refuses(gid):
    with pytest.raises(ids.BadGlobalId):
        ids.decode(gid)
    assert not _pattern().match(gid)


def test_the_global_id_pattern_refuses_shards_the_config_has_not():
    ids.decode("s3~i1")  # a global id, of a shard this gateway does not have: 404
    assert not _pattern().match("s3~i1") and _pattern().match("s2~i1")


def test_the_global_id_pattern_matches_every_id_the_gateway_issues():
    rng = random.Random(7)
    pattern = _pattern(("s1", "s2", "dead-1_x"))
    text = "abcXYZ019._-~ /%é漢😀\x00\n"
    for _ in range(20000):
        local = (rng.choice([0, 7, -7, 10 ** 30, -(10 ** 20)]) if rng.random() < 0.3 else
                 "".join(rng.choice(text) for _ in range(rng.randrange(1, 10))))
        gid = ids.encode(rng.choice(["s1", "s2", "dead-1_x"]), local)
        assert pattern.match(gid), gid


def test_what_the_pattern_lets_through_is_only_what_a_regex_cannot_tell():
    """A b-body the pattern accepts and decode refuses decodes to bytes that
    are not UTF-8, or to a text the r form spells (see openapi._LOCAL_ID)."""
    rng = random.Random(3)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    pattern = _pattern()
    for _ in range(20000):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 10)))
        gid = "s1~b" + body
        if not pattern.match(gid):
            continue
        try:
            ids.decode(gid)
        except ids.BadGlobalId:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == body  # canonical
            try:
                spelled = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            assert re.match(r"^[A-Za-z0-9._-]+\Z", spelled), gid


def test_the_global_id_names_a_configured_shard():
    data = tomllib.loads(GOOD)
    data["routes"].append({"path": "/v3/events/{event_id}", "mode": "route",
                           "global_id": "event_id"})
    doc = openapi.document(config.parse(data, "<t>"))
    item = doc["paths"]["/v3/events/{event_id}"]
    pattern = item["parameters"][0]["schema"]["pattern"]
    assert pattern.startswith("^(?:s1|s2)~")
    assert "404" in item["get"]["responses"] and "unknown_shard" in item["get"]["responses"][
        "404"]["description"]


def test_errors_the_gateway_makes_are_described_with_retry_after():
    data = tomllib.loads(GOOD)
    doc = openapi.document(config.parse(data, "<t>"))
    listing = doc["paths"]["/v3/events"]["get"]["responses"]
    assert {"400", "408", "409", "410", "413", "414", "431", "502", "503", "504",
            "4XX"} <= set(listing)
    assert listing["503"]["headers"]["Retry-After"]["required"] is True

    def codes(status):
        schema = listing[status]["content"]["application/json"]["schema"]
        return schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]

    assert codes("410") == ["cursor_shard_gone", "shards_rejected"]
    assert codes("409") == ["cursor_owners_changed", "shards_rejected"]
    assert set(codes("502")) == {"shards_failed", "shard_failed"}
    assert "shards_unavailable" in codes("503")
    vendor = doc["paths"]["/v3/vendors/{vendor_id}/events"]
    relayed = vendor["get"]["responses"]
    assert {"404", "408", "413", "414", "431", "502", "504", "default"} <= set(relayed)
    assert "503" not in relayed  # a read never waits for a tenant's move
    write = vendor["post"]["responses"]["503"]
    assert write["description"].startswith("tenant_moving:") and "Retry-After" in write["headers"]
    assert doc["components"]["headers"]["Retry-After"]["schema"]["type"] == "integer"


def test_with_auth_429_has_retry_after(tmp_path):
    from shardstream.core import keys

    key_id, key = keys.new_key()
    (tmp_path / "keys.toml").write_text(
        f'[partners.p]\nscopes = ["/v3/events"]\n[[partners.p.keys]]\nid = "{key_id}"\n'
        f'hash = "{keys.hash_key(key)}"\n')
    data = tomllib.loads(GOOD)
    data["auth"] = {"keys_file": str(tmp_path / "keys.toml")}
    doc = openapi.document(config.parse(data, "<t>"))
    validate(doc)
    listing = doc["paths"]["/v3/events"]["get"]["responses"]
    assert {"401", "403", "429"} <= set(listing)
    assert "Retry-After" in listing["429"]["headers"]


def test_prefix_routes_and_the_fallback_are_described_under_an_extension():
    data = tomllib.loads(GOOD)
    data["routes"].insert(0, {"prefix": "/v3/vendors/", "mode": "any", "methods": ["DELETE"]})
    data["routes"].append({"prefix": "/v3/reference/", "mode": "any"})
    data["fallback"] = {"mode": "find"}
    doc = openapi.document(config.parse(data, "<t>"))
    validate(doc)
    prefixed = doc[openapi.PREFIX_ROUTES]
    assert [p["prefix"] for p in prefixed] == ["/v3/vendors/", "/v3/reference/", "/"]
    assert prefixed[0]["methods"] == ["DELETE"] and set(prefixed[0]["operations"]) == {"delete"}
    assert prefixed[1]["methods"] == ["GET", "HEAD"] and "get" in prefixed[1]["operations"]
    assert prefixed[2]["fallback"] is True and set(prefixed[2]["operations"]) == {"get", "head"}
    assert "/v3/reference/" not in doc["paths"]
    # The earlier prefix route answers DELETE on every vendor path: not the route below it.
    assert "delete" not in doc["paths"]["/v3/vendors/{vendor_id}/events"]
    assert openapi.PREFIX_ROUTES in doc["info"]["description"]
