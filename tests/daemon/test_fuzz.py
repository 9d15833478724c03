"""The gateway as its own OpenAPI document describes it, fuzzed from outside.

A live daemon in front of the four demo shards and one dead shard, with a
partner key: schemathesis generates requests from ``/openapi.json`` (bounded
here; ``SHARDSTREAM_FUZZ_EXAMPLES=1000`` for a long run) and every answer
must conform to the document, carry no traceback, and never be a 500 (the
gateway failing itself; a 502/504 says a shard failed, as documented). A
hypothesis test throws malformed keys, cursors, ids, queries, headers and
bodies at it with the same checks.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import schemathesis
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from processes import env, stop, twistd, wait_for_line
from support import free_port, listen_port
from shardstream.core import keys
from shardstream.demo.inventory import demo_config_data

EXAMPLES = int(os.environ.get("SHARDSTREAM_FUZZ_EXAMPLES", "15"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    shards = subprocess.Popen([sys.executable, "-m", "shardstream.demo", "--fast"], env=env(),
                              stdout=subprocess.PIPE, text=True)
    line = shards.stdout.readline()
    assert line.startswith("SHARDS "), line
    urls = [part.split("=", 1)[1] for part in line.split()[1:]]
    port = listen_port()
    data = demo_config_data(urls, f"tcp:{port}:interface=127.0.0.1")
    data["shards"]["dead"] = {"urls": [f"http://127.0.0.1:{free_port()}"]}
    data["upstream"]["retries"] = 0
    key_id, key = keys.new_key()
    with open(tmp / "keys.toml", "wb") as f:
        tomli_w.dump({"partners": {"fuzzer": {
            "scopes": sorted({r["path"] for r in data["routes"]}),
            "keys": [{"id": key_id, "hash": keys.hash_key(key)}]}}}, f)
    data["auth"] = {"keys_file": str(tmp / "keys.toml")}
    data["cursor"] = {"secret_env": "FUZZ_CURSOR_SECRET"}
    data["server"]["access_log"] = False
    with open(tmp / "gw.toml", "wb") as f:
        tomli_w.dump(data, f)
    proc = twistd(tmp, "--config", str(tmp / "gw.toml"),
                  extra_env={"FUZZ_CURSOR_SECRET": "f" * 32})
    wait_for_line(proc, "listening on")
    yield f"http://127.0.0.1:{port}", key
    code, out = stop(proc)
    shards.send_signal(signal.SIGTERM)
    shards.wait(timeout=10)
    assert code == 0, out
    assert "Traceback" not in out and "internal error" not in out, out


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_the_document_is_valid_openapi_and_names_every_route(gateway):
    import json

    base, _ = gateway
    doc = json.loads(_get(base + "/openapi.json"))  # public: no key needed
    validate(doc)
    assert doc["openapi"] == "3.1.0" and doc["security"] == [{"bearer": []}]
    assert set(doc["paths"]) == {"/v3/events", "/v3/events/{event_id}",
                                 "/v3/vendors/{vendor_id}/events", "/v3/vendors/{vendor_id}"}
    listing = doc["paths"]["/v3/events"]["get"]
    sort = next(p for p in listing["parameters"] if p["name"] == "sort")["schema"]["enum"]
    assert "starts_at" in sort and "-price.amount" in sort
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")["schema"]
    assert limit["maximum"] == 500
    assert "application/x-ndjson" in listing["responses"]["200"]["content"]
    assert {"401", "429", "502"} <= set(listing["responses"])


def _checked(response, case=None) -> None:
    assert response.status_code != 500, response.text
    assert "Traceback" not in response.text and "File \"/" not in response.text
    if case is not None:
        # A 502/504 says a shard failed (documented), and a well-formed but
        # unsigned cursor is rightly refused: those two checks do not apply.
        case.validate_response(response, excluded_checks=[not_a_server_error,
                                                          positive_data_acceptance])


@pytest.fixture(scope="module")
def api_schema(gateway):
    base, _ = gateway
    return schemathesis.openapi.from_url(base + "/openapi.json")


def test_every_operation_answers_as_documented(api_schema, gateway):
    """schemathesis's cases for each operation of the document (driven here
    with hypothesis directly: its pytest plugin does not run on pytest 9)."""
    _, key = gateway
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(case=operation.as_strategy())
        def run(case):
            response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=20)
            _checked(response, case)

        run()


_junk = st.text(alphabet=st.characters(codec="latin-1", exclude_categories=("Cs",)),
                max_size=60)
_segment = st.sampled_from(["eu~i1", "us~rv200", "eu~", "~i1", "nope~i1", "eu~x", "eu~b!!",
                            "%00", "%2e%2e", "v100", "x" * 300]) | _junk


@settings(max_examples=EXAMPLES * 4, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/v3/events", "/v3/events/{}", "/v3/vendors/{}/events",
                             "/v3/vendors/{}", "/{}"]),
       segment=_segment, query=st.lists(st.tuples(
           st.sampled_from(["limit", "offset", "cursor", "sort", "partial", "x"]), _junk),
           max_size=4),
       authorization=st.one_of(st.none(), _junk, st.just("Bearer ssk_00000000_" + "A" * 43)),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]),
       body=st.one_of(st.none(), st.binary(max_size=200),
                      st.just(b'{"vendor_id": "v100", "title": "x"}')))
def test_malformed_input_gets_a_clear_answer(gateway, path, segment, query, authorization,
                                             method, body):
    from urllib.parse import quote, urlencode

    base, key = gateway
    url = base + path.replace("{}", quote(segment, safe="~%")) + (
        "?" + urlencode(query) if query else "")
    headers = {"Authorization": authorization if authorization is not None
               else f"Bearer {key}", "Content-Type": "application/json"}
    try:
        headers["Authorization"].encode("latin-1")
    except UnicodeEncodeError:
        return
    if re.search(r"[\x00-\x1f\x7f]", headers["Authorization"]):
        return  # http.client refuses to send it: nothing reaches the gateway
    request = urllib.request.Request(url, data=body if method in ("POST", "PUT") else None,
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            status, text = r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode("utf-8", "replace")
    assert status != 500, text
    assert "Traceback" not in text
    if status >= 400 and method != "HEAD":
        import json

        assert "error" in json.loads(text) or status in (502, 504), text
