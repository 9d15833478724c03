"""The gateway as its own OpenAPI document describes it, fuzzed from outside.

A live daemon in front of the four demo shards and one dead shard, with a
partner key: schemathesis generates requests from ``/openapi.json`` (bounded
here; ``SHARDSTREAM_FUZZ_EXAMPLES=1000`` for a long run) and every answer
must pass schemathesis's own checks (schema, status code, content type and
headers conformance, not_a_server_error, positive_data_acceptance where the
document can promise it) and carry no traceback. A 5xx is never the gateway
failing itself: never a 500, and a 502/503/504 only as a JSON error whose
code is a documented shard failure naming the failed shards (the dead one;
a demo shard a fuzzed write crashed), or a 503 of the gateway's own that the
operation documents, with Retry-After. A shard's own 5xx, relayed, is the
shard's. A hypothesis test throws malformed keys, cursors, ids, queries,
headers and bodies at it with the same 5xx rule.
"""

from __future__ import annotations

import json
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
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               positive_data_acceptance,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from processes import env, stop, twistd, wait_for_line
from support import free_port, listen_port
from shardstream.core import ids, keys, openapi
from shardstream.demo.inventory import demo_config_data

EXAMPLES = int(os.environ.get("SHARDSTREAM_FUZZ_EXAMPLES", "15"))
DEAD = "dead"  # the one shard that fails, by design: it has no listener
SHARDS = {"eu", "us", "apac", "mea", DEAD}


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
    data["shards"][DEAD] = {"urls": [f"http://127.0.0.1:{free_port()}"]}
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


def _relayed(headers) -> bool:
    """A demo shard's own answer, relayed (the demo shards mark theirs)."""
    return "x-shard" in headers


def _named_failures(error: dict) -> list:
    """The shards an error body names as failed: a relayed request's shard,
    a find's or an any route's failed list, a list's meta.shards.failed."""
    named = [error["shard"]] if "shard" in error else []
    named += [f.get("shard") for f in error.get("failed") or []]
    named += [f.get("shard") for f in ((error.get("meta") or {}).get("shards") or {}).get(
        "failed") or []]
    return named


def _documented_503(case) -> set:
    """The codes of the gateway's own 503s the operation documents (its 503's
    description begins "code, code: ..."), such as tenant_moving."""
    text = case.operation.definition.raw.get("responses", {}).get("503", {}).get(
        "description", "")
    return set(text.split(":", 1)[0].split(", ")) if ":" in text else set()


def _server_error(status: int, headers, text: str, documented_503=frozenset()) -> str | None:
    """Why a 5xx is the gateway failing itself (None: it is not: a shard's own
    answer relayed, a documented report of failed shards naming them, or a
    documented 503 of the gateway's with Retry-After). Headers: lower-case."""
    if status < 500 or _relayed(headers):
        return None
    if status not in openapi.SHARD_FAILURE_CODES:
        return f"{status} is not an answer the gateway documents"
    try:
        error = json.loads(text)["error"]
        code = error["code"]
    except (ValueError, KeyError, TypeError):
        return f"a {status} that is not a JSON error body"
    if status == 503 and not headers.get("retry-after"):
        return "a 503 without Retry-After"
    if status == 503 and code in documented_503 - set(openapi.SHARD_FAILURE_CODES[503]):
        return None  # the gateway's own "try again", as documented
    if code not in openapi.SHARD_FAILURE_CODES[status]:
        return f"{status} {code}: not one of the shard failures {openapi.SHARD_FAILURE_CODES}"
    named = _named_failures(error)
    # The dead shard fails by design; a demo shard fails too when a fuzzed
    # write crashes it (then it is ejected for a while): either way named.
    if not named or not set(named) <= SHARDS:
        return f"{status} {code} names {named} as failed, not shards of the config"
    return None


def _head_as_get(response) -> tuple[int, dict, str]:
    """A HEAD's answer has no body: the same request as a GET, for its error."""
    sent = response.request
    request = urllib.request.Request(sent.url, headers=dict(sent.headers), method="GET")
    try:
        with urllib.request.urlopen(request, timeout=20) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def _positive_data_is_promised(case) -> bool:
    """Can the document promise that this valid-looking request is accepted?
    Only where the gateway answers from the request alone: a list (a relayed
    route's acceptance is the shard's API, not described), without a cursor
    (signed: none but the gateway's own is accepted), and any global id in
    the path one ids.decode accepts (its pattern cannot hold every base64
    rule: see openapi._LOCAL_ID)."""
    if not case.operation.definition.raw.get("operationId", "").startswith("list"):
        return False
    if "cursor" in (case.query or {}):
        return False
    for value in (case.path_parameters or {}).values():
        if isinstance(value, str) and "~" in value:
            try:
                ids.decode(value)
            except ids.BadGlobalId:
                return False
    return True


# schemathesis's default checks include these (and ignored_auth, missing_required_header,
# unsupported_method ...): every one runs on every answer, but for the exclusions below.
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, positive_data_acceptance)


def _reported(problem: str):
    """A check that fails with ``problem``, next to schemathesis's own."""
    def gateway_failed_itself(ctx, response, case) -> None:
        raise AssertionError(problem)

    return gateway_failed_itself


def _checked(response, case) -> None:
    text = response.text
    assert "Traceback" not in text and "File \"/" not in text
    headers = {k: v[0] for k, v in response.headers.items()}
    excluded, extra = [], []
    if response.status_code >= 500:
        # A shard's own 5xx, relayed as the document says (a demo shard crashes
        # on some fuzzed writes), is not the gateway's: its part is to pass it on.
        if case.method.upper() == "HEAD" and not _relayed(headers):  # no body: a GET tells
            problem = _server_error(*_head_as_get(response), _documented_503(case))
        else:
            problem = _server_error(response.status_code, headers, text, _documented_503(case))
        if problem is None:  # the shards' failure, as documented
            excluded.append(not_a_server_error)
        else:  # the gateway's own 5xx (a 500 always): not_a_server_error fails, and says why
            extra.append(_reported(f"{problem}: {text[:2000]}"))
    if not _positive_data_is_promised(case):
        excluded.append(positive_data_acceptance)
    case.validate_response(response, additional_checks=extra, excluded_checks=excluded)


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
    enabled = api_schema.config.checks_config_for()
    assert all(enabled.get_by_name(name=check.__name__).enabled for check in CHECKS)

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
            status, answer, text = r.status, r.headers, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, answer, text = e.code, e.headers, e.read().decode("utf-8", "replace")
    headers = {k.lower(): v for k, v in answer.items()}
    assert "Traceback" not in text
    if status >= 500 and _relayed(headers):
        return  # a shard's own 5xx (a demo shard crashes on some bodies), passed on
    assert status != 500, text
    if method == "HEAD":  # no body to tell its error by
        assert status < 500 or status in openapi.SHARD_FAILURE_CODES, status
        return
    problem = _server_error(status, headers, text)
    assert problem is None, f"{problem}: {text}"
    if status >= 400:
        assert "error" in json.loads(text), text
