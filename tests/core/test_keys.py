"""Partner API keys: form, hashing, lookup in constant time, scopes, the file."""

from __future__ import annotations

import pytest

from shardstream.core import keys
from shardstream.core.config import ConfigError
from shardstream.core.errors import Forbidden, Unauthorized


def store(*scopes: str, extra: dict | None = None) -> tuple[keys.KeyStore, str]:
    key_id, key = keys.new_key()
    data = {"partners": {"acme": {"scopes": list(scopes) or ["/v3/events"], "rate": 5,
                                  "burst": 10, "concurrency": 2,
                                  "keys": [{"id": key_id, "hash": keys.hash_key(key)}]},
                         **(extra or {})}}
    return keys.parse(data, "keys.toml", {"/v3/events", "/v3/events/{event_id}"}), key


def test_a_new_key_is_long_random_and_only_its_hash_is_kept():
    ids = set()
    for _ in range(50):
        key_id, key = keys.new_key()
        assert keys.KEY.match(key) and key.startswith(f"ssk_{key_id}_") and len(key) == 56
        assert keys.hash_key(key) != key and key not in keys.hash_key(key)
        ids.add(key_id)
    assert len(ids) == 50


def test_lookup_finds_the_partner_of_a_key_and_nothing_else():
    s, key = store()
    partner = s.lookup(key)
    assert partner is not None and partner.name == "acme"
    assert (partner.rate, partner.burst, partner.concurrency) == (5.0, 10, 2)
    assert s.lookup(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # one char off
    assert s.lookup("ssk_00000000_" + "A" * 43) is None  # unknown id: compared to a dummy
    for bad in ("", "Bearer", "x" * 5000, "ssk_zz_zz", key + " "):
        assert s.lookup(bad) is None


def test_authorize_takes_a_bearer_or_the_configured_header_and_checks_scopes():
    s, key = store("/v3/events:read", "/v3/events/{event_id}")
    assert keys.authorize(s, f"Bearer {key}", None, "/v3/events", "GET").name == "acme"
    assert keys.authorize(s, f"bearer  {key} ", None, "/v3/events", "HEAD").name == "acme"
    assert keys.authorize(s, None, key, "/v3/events", "GET").name == "acme"
    assert keys.authorize(s, None, key, "/v3/events/{event_id}", "DELETE").name == "acme"
    with pytest.raises(Forbidden):
        keys.authorize(s, f"Bearer {key}", None, "/v3/events", "POST")  # read only
    for authorization, other in ((None, None), ("Basic dXNlcjpwdw==", None),
                                 ("Bearer ", None), (f"Bearer {key}x", None)):
        with pytest.raises(Unauthorized):
            keys.authorize(s, authorization, other, "/v3/events", "GET")
    # no route matched: the key is still checked first (404 only for partners)
    assert keys.authorize(s, f"Bearer {key}", None, None, "GET").name == "acme"
    with pytest.raises(Unauthorized):
        keys.authorize(s, None, None, None, "GET")


def test_a_revoked_partner_has_no_key_that_works():
    key_id, key = keys.new_key()
    s = keys.parse({"partners": {"old": {"scopes": ["/v3/events"], "keys": []}}}, "k")
    assert s.lookup(key) is None


@pytest.mark.parametrize("partner, problem", [
    ({"scopes": ["/nowhere"]}, "is not the path of any route"),
    ({"scopes": ["v3/events"]}, "a scope is a route's path"),
    ({"scopes": ["/v3/events"], "keys": [{"id": "xyz", "hash": "sha256:" + "0" * 64}]},
     "is not a key id"),
    ({"scopes": ["/v3/events"], "keys": [{"id": "0badc0de", "hash": "ssk_plain_key"}]},
     "the file never holds a key"),
    ({"scopes": ["/v3/events"], "rate": -1}, "greater than 0"),
    ({"scopes": ["/v3/events"], "colour": "red"}, "unknown key"),
])
def test_a_bad_keys_file_is_refused_naming_the_partner_and_key(partner, problem):
    with pytest.raises(ConfigError) as e:
        keys.parse({"partners": {"acme": partner}}, "keys.toml", {"/v3/events"})
    assert e.value.key.startswith("partners.acme") and problem in str(e.value)
    assert str(e.value).startswith("keys.toml: partners.acme")


def test_every_bad_partner_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        keys.parse({"partners": {"a": {"scopes": ["/x"]}, "b": {"scopes": []},
                                 "c d": {"scopes": ["/v3/events"]}}}, "k", {"/v3/events"})
    assert [p.key for p in e.value.problems] == ["partners.a.scopes", "partners.b.scopes",
                                                "partners.c d"]
