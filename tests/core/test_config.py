"""Config validation: every error names the file, the key and the problem."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from configs import GOOD, write

from shardstream.core import config
from shardstream.daemon.startup import load_config


ROOT = Path(__file__).resolve().parents[2]


def test_good_config_loads_into_immutable_objects(tmp_path):
    c = config.load(write(tmp_path, GOOD))
    assert c.upstream.connect_timeout == 1.0 and c.upstream.idle_timeout == 10.0
    assert [s.name for s in c.shards] == ["s1", "s2"]
    assert c.shards[0].urls == ("http://127.0.0.1:9001",)
    assert c.shards[1].urls == ("https://shard2.internal:8443/api",)
    assert c.routes[0].methods == frozenset({"GET"}) and c.routes[1].methods is None
    assert c.directory["vendor_id"].table["v200"].shard == "s2"
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.server.listen = "x"
    with pytest.raises(TypeError):
        c.directory["vendor_id"].table["v300"] = "s1"


BAD = [
    (GOOD + '\n[rate_limit]\nredis_url = "redis://ops:hunter2@127.0.0.1:6379/0"\n',
     "rate_limit.redis_url", "'redis://***@127.0.0.1:6379/0' must not contain a user or password"),
    (GOOD + "\n[auth]\n", "auth.keys_file", "[auth] turns authentication on"),
    (GOOD.replace("[server]\n", "[server]\nitem_parser = \"fast\"\n"), "server.item_parser",
     "must be one of"),
    (GOOD.replace("[upstream]\n", "[upstream]\nclient = \"curl\"\n"), "upstream.client",
     "must be one of"),
    (GOOD.replace('mode = "scatter"', 'mode = "fanout"'), "routes[0].mode", "must be one of"),
    (GOOD.replace('items = "data.item"', ""), "routes[0].items", "is required"),
    (GOOD.replace('shard_key = "vendor_id"', 'shard_key = "vendor"'), "routes[1].shard_key",
     "not a parameter"),
    (GOOD.replace("[shard_map.vendor_id]", "[shard_map.other]"), "routes[1].shard_key",
     "no [shard_map.vendor_id]"),
    (GOOD.replace('v200 = "s2"', 'v200 = "s9"'), "shard_map.vendor_id.v200", "'s9'"),
    (GOOD.replace("first_byte_timeout = 2.5", "first_byte_timeout = -1"),
     "upstream.first_byte_timeout", "greater than 0"),
    (GOOD.replace("first_byte_timeout = 2.5", 'first_byte_timeout = "5s"'),
     "upstream.first_byte_timeout", "must be a number"),
    (GOOD.replace("first_byte_timeout = 2.5", "first_bite_timeout = 2.5"),
     "upstream.first_bite_timeout", "unknown key"),
    (GOOD.replace('urls = ["http://127.0.0.1:9001/"]', 'urls = ["ftp://x"]'), "shards.s1.urls",
     "http://"),
    (GOOD.replace('urls = ["http://127.0.0.1:9001/"]', "urls = []"), "shards.s1.urls",
     "non-empty list"),
    (GOOD.replace("[shards.s1]", "[shards.\"s 1\"]"), "shards.s 1", "letters, digits"),
    (GOOD.replace('listen = "tcp:8080:interface=127.0.0.1"', 'listen = "tcp:http"'),
     "server.listen", "not a valid Twisted endpoint"),
    (GOOD.replace('path = "/v3/events"', 'path = "v3/events"'), "routes[0].path", "start with '/'"),
    (GOOD.replace('"/v3/vendors/{vendor_id}/events"', '"/v3/vendors/x{vendor_id}/events"'),
     "routes[1].path", "whole segment"),
    (GOOD.replace('mode = "scatter"', 'mode = "scatter"\nmethods = ["GET", "POST"]'),
     "routes[0].methods", "never fanned out"),
    (GOOD.replace('mode = "scatter"', 'mode = "scatter"\nmethods = ["FETCH"]'),
     "routes[0].methods", "'FETCH'"),
    (GOOD + '\n[[routes]]\npath = "/v3/events"\nmode = "scatter"\nitems = "item"\n',
     "routes[2].path", "already served by routes[0]"),
    (GOOD + "\n[extra]\nx = 1\n", "extra", "unknown key"),
    (GOOD.replace("[[routes]]", "[[rutes]]"), "routes", "at least one"),
    ("[server]\nlisten = 'tcp:1'\n", "shards", "is required"),
    ("this is = not toml", "", "invalid TOML"),
    (GOOD.replace('urls = ["http://127.0.0.1:9001/"]',
                  'urls = ["http://127.0.0.1:9001/", "http://127.0.0.1:9001"]'),
     "shards.s1.urls", "listed twice"),
    (GOOD.replace("first_byte_timeout = 2.5", "retries = -1"), "upstream.retries",
     "at least 0"),
    (GOOD.replace("first_byte_timeout = 2.5", "retry_budget = 1.5"), "upstream.retry_budget",
     "at most 1"),
    (GOOD + '\n[health]\npath = "healthz"\n', "health.path", "start with '/'"),
    (GOOD + '\n[health]\npath = "/h"\ninterval = 1.0\ntimeout = 2.0\n', "health.timeout",
     "shorter than interval"),
    (GOOD + '\n[health]\nintervall = 1\n', "health.intervall", "unknown key"),
    (GOOD + '\n[outlier]\nconsecutive_failures = 0\n', "outlier.consecutive_failures",
     "greater than 0"),
    (GOOD + '\n[outlier]\nbase_ejection = 10\nmax_ejection = 5\n', "outlier.max_ejection",
     "at least base_ejection"),
    (GOOD.replace('mode = "scatter"', 'mode = "scatter"\npartial = "no"'), "routes[0].partial",
     "true or false"),
    (GOOD + "\n[admin]\nready_min_shards = 0\n", "admin.ready_min_shards", "between 1 and the 2"),
    (GOOD + "\n[admin]\nready_min_shards = 3\n", "admin.ready_min_shards", "between 1 and the 2"),
    (GOOD + "\n[admin]\nready_min_shards = 1.5\n", "admin.ready_min_shards", "at most 1"),
    (GOOD + "\n[admin]\nready_min_shards = 0.0\n", "admin.ready_min_shards", "above 0"),
    (GOOD + "\n[admin]\nready_min_shards = true\n", "admin.ready_min_shards", "a boolean"),
    (GOOD + '\n[admin]\nready_min_shards = "half"\n', "admin.ready_min_shards", "a string"),
    (GOOD + "\n[admin]\nready = 1\n", "admin.ready", "unknown key"),
    (GOOD.replace('listen = "tcp:8080:interface=127.0.0.1"',
                  'listen = "tcp:8080:interface=127.0.0.1"\ndrain_delay = -1'),
     "server.drain_delay", "at least 0"),
]


def test_admin_and_drain_keys_load(tmp_path):
    c = config.load(write(tmp_path, GOOD))
    assert (c.admin.ready_min_shards, c.admin.required(2), c.server.drain_delay) == (1, 1, 0.0)
    c = config.load(write(tmp_path, GOOD.replace(
        'listen = "tcp:8080:interface=127.0.0.1"',
        'listen = "tcp:8080:interface=127.0.0.1"\ndrain_delay = 2.5') + "[admin]\nready_min_shards = 0.5\n"))
    assert (c.admin.ready_min_shards, c.admin.required(2), c.server.drain_delay) == (0.5, 1, 2.5)
    assert [config.AdminConfig(ready_min_shards=x).required(10) for x in (0.3, 0.25, 1.0, 4)] == [
        3, 3, 10, 4]


def test_replica_and_health_keys_load(tmp_path):
    text = GOOD.replace('urls = ["http://127.0.0.1:9001/"]',
                        'urls = ["http://127.0.0.1:9001/", "http://127.0.0.1:9011"]')
    text += '\n[health]\npath = "/healthz"\ninterval = 2\n[outlier]\nmax_ejection = 60\n'
    text = text.replace('mode = "scatter"', 'mode = "scatter"\npartial = false')
    c = config.load(write(tmp_path, text))
    assert c.shards[0].urls == ("http://127.0.0.1:9001", "http://127.0.0.1:9011")
    assert (c.health.path, c.health.interval, c.health.timeout) == ("/healthz", 2.0, 1.0)
    assert (c.outlier.consecutive_failures, c.outlier.max_ejection) == (5, 60.0)
    assert c.routes[0].scatter.partial is False
    assert (c.upstream.retries, c.upstream.retry_budget, c.upstream.retry_budget_min) == (2, 0.2, 10)


@pytest.mark.parametrize("text,key,problem", BAD)
def test_errors_name_file_key_and_problem(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as e:
        load_config(path)  # the daemon's loader: the core's, with Twisted judging server.listen
    assert e.value.key == key
    assert problem in e.value.problem
    assert "hunter2" not in str(e.value)
    assert str(e.value).startswith(f"{path}: {key}" if key else path)


def test_missing_file(tmp_path):
    with pytest.raises(config.ConfigError) as e:
        config.load(str(tmp_path / "nope.toml"))
    assert "cannot read" in str(e.value) and "nope.toml" in str(e.value)


def _documented_keys() -> set[str]:
    keys = {f.name for cls in (config.ServerConfig, config.UpstreamConfig, config.Route,
                               config.ScatterOptions, config.RelayOptions, config.OwnerOptions,
                               config.FindOptions, config.HealthConfig, config.OutlierConfig,
                               config.AdminConfig, config.AuthConfig,
                               config.RateLimitConfig, config.TLSConfig,
                               config.DirectoryConfig)
            for f in dataclasses.fields(cls)} - {"key", "scatter", "relay", "owner", "find",
                                                 "keys", "kind", "table"}
    keys |= {"urls", "secret_env", "secret_file", "secret_credential", "keys_file",
             "keys_credential", "prefix", "accepts_new", "weight"}
    return keys


@pytest.mark.parametrize("doc", ["etc/shardstream.toml", "README.md"])
def test_every_config_key_is_documented(doc):
    text = (ROOT / doc).read_text()
    missing = [k for k in sorted(_documented_keys()) if not re.search(rf"\b{k}\b", text)]
    assert missing == []


def test_the_example_config_is_valid(monkeypatch, tmp_path):
    (tmp_path / "cursor_secret").write_text("x" * 32 + "\n")  # as LoadCredential= provides it
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    c = config.load(str(ROOT / "etc" / "shardstream.toml"))
    assert c.routes and c.shards and c.cursor_secret == b"x" * 32
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(config.ConfigError) as e:
        config.load(str(ROOT / "etc" / "shardstream.toml"))
    assert e.value.key == "cursor.secret_credential"


ISSUE4 = GOOD + """
[[routes]]
path = "/v3/events/{event_id}"
mode = "route"
global_id = "event_id"
id_fields = ["id"]

[[routes]]
path = "/v3/events"
methods = ["POST"]
mode = "route"
shard_key_body = "vendor_id"
max_body = 1000

[[routes]]
path = "/v3/vendors/{vendor_id}"
mode = "find"
"""


@pytest.mark.parametrize("text,key,problem", [
    (ISSUE4.replace('global_id = "event_id"', 'global_id = "id"'), "routes[2].global_id",
     "not a parameter"),
    (ISSUE4.replace('global_id = "event_id"', 'global_id = "event_id"\nshard_key = "event_id"'),
     "routes[2].shard_key", "exactly one of"),
    (ISSUE4.replace('shard_key_body = "vendor_id"', ""), "routes[3].shard_key", "exactly one of"),
    (ISSUE4.replace('mode = "find"', 'mode = "find"\nmethods = ["DELETE"]'),
     "routes[4].methods", "GET and HEAD only"),
    (ISSUE4.replace('mode = "find"', 'mode = "find"\nshard_key = "vendor_id"'),
     "routes[4].shard_key", "no owner key"),
    (ISSUE4.replace('items = "data.item"', 'items = "data.item"\nsort = ["a..b"]'),
     "routes[0].sort", "dotted path"),
    (ISSUE4.replace('items = "data.item"', 'items = "data.item"\nmax_limit = 0'),
     "routes[0].max_limit", "greater than 0"),
    (ISSUE4.replace('items = "data.item"',
                    'items = "data.item"\nmax_limit = 5\ndefault_limit = 6'),
     "routes[0].default_limit", "above max_limit"),
    (ISSUE4 + '[cursor]\nsecret_env = "SHARDSTREAM_TEST_UNSET_VAR"\n', "cursor.secret_env",
     "not set"),
    (ISSUE4 + '[cursor]\nsecret_file = "/nonexistent/key"\n', "cursor.secret_file",
     "cannot read"),
])
def test_issue4_keys_are_validated(tmp_path, text, key, problem):
    with pytest.raises(config.ConfigError) as e:
        config.load(write(tmp_path, text))
    assert (e.value.key, problem in e.value.problem) == (key, True), str(e.value)


def test_cursor_secret_file(tmp_path):
    (tmp_path / "key").write_bytes(b"k" * 20 + b"\n")
    c = config.load(write(tmp_path, ISSUE4 + f'[cursor]\nsecret_file = "{tmp_path}/key"\n'))
    assert c.cursor_secret == b"k" * 20
    assert c.routes[4].find.cache_size == 10000 and c.routes[3].relay.max_body == 1000


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    text = (GOOD
            .replace('listen = "tcp:8080:interface=127.0.0.1"',
                     'listen = "tcp:8080:interface=127.0.0.1"\nmax_body = "10M"\nworkers = 0')
            .replace('urls = ["http://127.0.0.1:9001/"]', 'urls = ["http://127.0.0.1 :9001/"]')
            .replace('urls = ["https://shard2.internal:8443/api"]',
                     'urls = ["https://gw:hunter2@shard2.internal:8443/api"]')
            .replace('items = "data.item"', 'items = "data.item"\nitem = "data"'))
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as e:
        load_config(path)
    keys = ["server.max_body", "server.workers", "shards.s1.urls", "shards.s2.urls",
            "routes[0].item"]
    assert [p.key for p in e.value.problems] == keys
    assert (e.value.key, e.value.problem) == ("server.max_body", e.value.problems[0].problem)
    lines = str(e.value).splitlines()
    assert [line.split(": ")[:2] for line in lines] == [[path, key] for key in keys]
    assert "whitespace" in lines[2] and "'https://***@shard2.internal:8443/api'" in lines[3]
    assert "hunter2" not in str(e.value) and "unknown key" in lines[4]


def test_a_config_error_carries_its_problems():
    one = config.ConfigError("gw.toml", "server.listen", "bad")
    assert (one.problems, str(one)) == ((one,), "gw.toml: server.listen: bad")
    both = config.ConfigError.combine([one, config.ConfigError("gw.toml", "", "worse")])
    assert (both.source, both.key, both.problem) == ("gw.toml", "server.listen", "bad")
    assert str(both) == "gw.toml: server.listen: bad\ngw.toml: worse"
    assert config.ConfigError.combine([one]) is one


@pytest.mark.parametrize("text,keys", [
    # A shard with a bad URL is still a shard that [shard_map] and [admin] may count on.
    (GOOD.replace('urls = ["https://shard2.internal:8443/api"]', 'urls = ["ftp://x"]')
     + "[admin]\nready_min_shards = 2\n", ["shards.s2.urls"]),
    # Nothing is checked against a [shards] or [shard_map] that is not a table.
    ('shards = 3\nshard_map = 4\n[[routes]]\npath = "/{k}"\nmode = "route"\nshard_key = "k"\n'
     + "[admin]\nready_min_shards = 3\n", ["shards", "shard_map"]),
    # A broken route is not compared with the others; a broken [health] key skips the
    # check across keys that it would take part in.
    (GOOD + '[[routes]]\npath = "/v3/events"\nmode = "scan"\n'
     "[health]\ninterval = -1\ntimeout = 6\n", ["routes[2].mode", "health.interval"]),
])
def test_checks_that_depend_on_a_bad_part_are_skipped(tmp_path, text, keys):
    with pytest.raises(config.ConfigError) as e:
        config.load(write(tmp_path, text))
    assert [p.key for p in e.value.problems] == keys, str(e.value)


def shard_url_problem(url: str) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as e:
        config.parse({"shards": {"s1": {"urls": [url]}},
                      "routes": [{"path": "/x", "mode": "scatter", "items": "item"}]}, "gw.toml")
    assert (e.value.key, len(e.value.problems)) == ("shards.s1.urls", 1), str(e.value)
    return e.value


@pytest.mark.parametrize("url", ["http://127.0.0.1 :9001", "http://127.0.0.1:9001/a\tb",
                                 "http://127.0.0.1:9001/\n"])
def test_shard_urls_with_whitespace_are_rejected(url):
    assert shard_url_problem(url).problem == (
        f"{url!r} must not contain whitespace (spaces, tabs or newlines)")


@pytest.mark.parametrize("url", ["http://ops:s3cr3t@127.0.0.1:9001", "http://ops@127.0.0.1:9001",
                                 "http://ops:s3/cr#3t@127.0.0.1:9001"])
def test_shard_urls_with_credentials_are_rejected_without_showing_them(url):
    e = shard_url_problem(url)
    assert e.problem == ("'http://***@127.0.0.1:9001' must not contain a user or password: "
                         "credentials in URLs end up in logs; authenticate with a header or TLS "
                         "instead")
    assert "ops" not in str(e) and "s3" not in str(e)


def test_cursor_secret_credential(tmp_path, monkeypatch):
    (tmp_path / "cursor.key").write_bytes(b"  " + b"c" * 16 + b"\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    c = config.load(write(tmp_path, GOOD + '[cursor]\nsecret_credential = "cursor.key"\n'))
    assert c.cursor_secret == b"c" * 16


@pytest.mark.parametrize("cursor,key,problem", [
    ('secret_credential = "missing"', "cursor.secret_credential",
     "/missing: No such file or directory (is LoadCredential=missing:... in the unit?)"),
    ('secret_credential = "short"', "cursor.secret_credential", "at least 16 bytes, not 15"),
    ('secret_credential = "../cursor_secret"', "cursor.secret_credential",
     "not a credential name"),
    ('secret_credential = ".."', "cursor.secret_credential", "not a credential name"),
    ('secret_env = "HOME"\nsecret_credential = "cursor_secret"', "cursor.secret_credential",
     ("set only one of secret_env, secret_file, secret_credential "
      "(this file sets secret_env and secret_credential)")),
    ('secret_env = "HOME"\nsecret_file = "/etc/hostname"', "cursor.secret_file",
     "(this file sets secret_env and secret_file)"),
    (None, "cursor.secret_credential",
     ("CREDENTIALS_DIRECTORY is not set: not running under systemd with "
      "LoadCredential=cursor_secret:..., or set secret_file instead")),
], ids=["missing", "short", "slash", "dotdot", "env+credential", "env+file", "no-directory"])
def test_cursor_secret_credential_errors(tmp_path, monkeypatch, cursor, key, problem):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "cursor_secret").write_text("k" * 32)
    (credentials / "short").write_text("k" * 15 + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    if cursor is None:  # not started by systemd with LoadCredential=
        monkeypatch.delenv("CREDENTIALS_DIRECTORY")
        cursor = 'secret_credential = "cursor_secret"'
    with pytest.raises(config.ConfigError) as e:
        config.load(write(tmp_path, GOOD + f"[cursor]\n{cursor}\n"))
    assert (e.value.key, problem in e.value.problem, len(e.value.problems)) == (key, True, 1), \
        str(e.value)


def test_changes_say_what_a_reload_changes_and_never_the_secret(monkeypatch):
    old = config.parse(tomllib.loads(GOOD), "<old>")
    assert config.changes(old, old) == []
    data = tomllib.loads(GOOD)
    data["shards"]["s3"] = {"urls": ["http://127.0.0.1:9003"]}
    del data["shards"]["s2"]
    data["shard_map"]["vendor_id"] = {"v100": "s1"}
    data["shards"]["s1"]["urls"].append("http://127.0.0.1:9011")
    data["routes"].append({"path": "/v3/tours", "mode": "scatter", "items": "data.item"})
    data["upstream"]["retries"] = 0
    monkeypatch.setenv("NEW_SECRET", "s" * 20)
    data["cursor"] = {"secret_env": "NEW_SECRET"}
    new = config.parse(data, "<new>")
    assert config.changes(old, new) == [
        "shards added: s3", "shards removed: s2", "shard replicas changed: s1",
        "routes added: /v3/tours (scatter, GET)", "directory changed", "[upstream] changed",
        "cursor secret changed"]
    assert not any("s" * 20 in line for line in config.changes(old, new))


def test_a_route_that_stops_early_still_names_its_unknown_keys_and_admin_every_key(tmp_path):
    path = write(tmp_path, GOOD + '[[routes]]\npath = "/v3/x"\nmode = "scatter"\n'
                 'items = "data.item"\nlimit_param = 3\nbogus = 1\n'
                 '[admin]\nready_min_shards = 0\ncolour = "red"\n')
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    keys = [p.key for p in e.value.problems]
    assert keys == ["routes[2].limit_param", "routes[2].bogus", "admin.ready_min_shards",
                    "admin.colour"]


def test_an_admin_endpoint_several_workers_cannot_share_is_refused(tmp_path):
    path = write(tmp_path, GOOD.replace('listen = "tcp:8080:interface=127.0.0.1"',
                                        'listen = "tcp:8080:interface=127.0.0.1"\nworkers = 2')
                 + '[admin]\nlisten = "unix:/tmp/admin.sock"\n')
    with pytest.raises(config.ConfigError) as e:
        load_config(path)
    assert e.value.key == "admin.listen" and "tcp: or systemd:" in e.value.problem


@pytest.mark.parametrize("table, problem", [
    ('header = "Authorization"\n', "set exactly one of value_env, value_file, value_credential"),
    ('header = "Authorization"\nvalue_env = "A"\nvalue_file = "/x"\n',
     "(this table sets value_env and value_file)"),
    ('header = "Bad Header"\nvalue_env = "A"\n', "is not a header name"),
    ('header = "X-Key"\nvalue_env = "NOT_SET_ANYWHERE"\n', "is not set or empty"),
    ('header = "X-Key"\nvalue_file = "/nonexistent/token"\n', "cannot read /nonexistent/token"),
])
def test_a_shard_credential_is_checked_and_never_shown(tmp_path, table, problem):
    text = GOOD.replace('[shards.s2]', '[shards.s1.credentials]\n' + table + '[shards.s2]')
    with pytest.raises(config.ConfigError) as e:
        config.load(write(tmp_path, text))
    assert e.value.key.startswith("shards.s1.credentials") and problem in str(e.value)


def test_a_shard_credential_is_read_and_kept_out_of_reprs(tmp_path, monkeypatch):
    monkeypatch.setenv("S1_KEY", "very-secret-token")
    text = GOOD.replace('[shards.s2]', '[shards.s1.credentials]\nheader = "X-Key"\n'
                        'value_env = "S1_KEY"\n[shards.s2]')
    c = config.load(write(tmp_path, text))
    assert c.shard("s1").credential == ("X-Key", b"very-secret-token")
    assert "very-secret-token" not in repr(c)
    old = config.load(write(tmp_path, GOOD))
    assert config.changes(old, c) == ["shard credentials changed: s1"]


def test_tls_paths_are_checked_at_load(tmp_path):
    not_pem = tmp_path / "x.txt"
    not_pem.write_text("hello")
    text = GOOD + f'[tls]\ncert = "{not_pem}"\nmin_version = "1.0"\n'
    with pytest.raises(config.ConfigError) as e:
        config.load(write(tmp_path, text))
    assert [(p.key, p.problem) for p in e.value.problems] == [
        ("tls.min_version", 'must be "1.2" or "1.3", not \'1.0\''),
        ("tls.cert", f"{not_pem} is not a PEM file"), ("tls.key", "is required")]
    text = GOOD.replace('[upstream]', f'[upstream]\nclient_key = "{tmp_path}/none.pem"')
    with pytest.raises(config.ConfigError) as e:
        config.load(write(tmp_path, text))
    assert e.value.key == "upstream.client_key" and "cannot read" in e.value.problem
