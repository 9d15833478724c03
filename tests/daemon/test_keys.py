"""``shardstream-keys`` and a gateway that reads its file, as ops use them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from processes import env, get, stop, twistd, wait_for_line
from support import free_port, listen_port

KEYS = [sys.executable, "-m", "shardstream.daemon.keys_cli"]


def keys_cmd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KEYS, *args], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=60)


def test_add_prints_the_key_once_and_the_file_holds_only_its_hash(tmp_path):
    out = keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme",
                   "--scope", "/v3/events:read", "--rate", "5", "--burst", "10",
                   "--concurrency", "3")
    assert out.returncode == 0, out.stderr
    key = out.stdout.splitlines()[-1]
    assert key.startswith("ssk_") and len(key) == 56
    text = (tmp_path / "keys.toml").read_text()
    assert key not in text and key.split("_")[1] in text and "sha256:" in text
    assert (tmp_path / "keys.toml").stat().st_mode & 0o777 == 0o600
    second = keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme")
    assert second.returncode == 0  # a second key for rotation keeps the scopes
    listing = keys_cmd(tmp_path, "list", "--file", "keys.toml").stdout
    assert "acme: scopes /v3/events:read; rate 5.0, burst 10, concurrency 3" in listing
    assert listing.count("  key ") == 2 and key not in listing
    one = key.split("_")[1]
    out = keys_cmd(tmp_path, "revoke", "--file", "keys.toml", "--partner", "acme", "--key", one)
    assert out.returncode == 0 and "revoked 1 key" in out.stdout
    assert one not in keys_cmd(tmp_path, "list", "--file", "keys.toml").stdout


def test_add_with_the_gateway_config_refuses_a_scope_that_names_no_route(tmp_path):
    """Without --config, a typo in a scope is written, and the gateway then
    refuses the file at its next reload (or start)."""
    cfg = _gateway_config(tmp_path, free_port())  # one route: /a
    out = keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme",
                   "--scope", "/b:read", "--config", str(cfg))
    assert out.returncode == 1, out
    assert "keys.toml: partners.acme.scopes: '/b' is not the path of any route" in out.stderr
    assert not (tmp_path / "keys.toml").exists() and "ssk_" not in out.stdout
    out = keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme",
                   "--scope", "/a:read", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    out = keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme",
                   "--scope", "/a", "--config", str(tmp_path / "missing.toml"))
    assert out.returncode == 1 and "missing.toml" in out.stderr and "cannot read" in out.stderr
    assert keys_cmd(tmp_path, "list", "--file", "keys.toml").stdout.count("  key ") == 1


def test_bad_use_is_refused_with_a_message(tmp_path):
    out = keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme")
    assert out.returncode != 0 and "needs at least one --scope" in out.stderr
    out = keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme",
                   "--scope", "v3/events")
    assert out.returncode == 1 and "a scope is a route's path" in out.stderr
    assert not (tmp_path / "keys.toml").exists()
    out = keys_cmd(tmp_path, "revoke", "--file", "keys.toml", "--partner", "nobody")
    assert out.returncode != 0 and "no partner 'nobody'" in out.stderr


def _gateway_config(tmp_path: Path, port: int, server: str = "") -> Path:
    """One scatter route /a over a dead shard, with [auth] on tmp_path/keys.toml."""
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[server]\nlisten = "tcp:{port}:interface=127.0.0.1"\n{server}'
                   f'[auth]\nkeys_file = "{tmp_path / "keys.toml"}"\n'
                   f'[shards.s1]\nurls = ["http://127.0.0.1:{free_port()}"]\n'
                   '[[routes]]\npath = "/a"\nmode = "scatter"\nitems = "data.item"\n')
    return cfg


def test_the_gateway_rereads_the_keys_file_on_sighup(tmp_path):
    port = listen_port()
    key = keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme",
                   "--scope", "/a").stdout.splitlines()[-1]
    cfg = _gateway_config(tmp_path, port)
    proc = twistd(tmp_path, "--config", str(cfg))
    try:
        lines = wait_for_line(proc, "listening on")
        auth = {"Authorization": f"Bearer {key}"}
        assert get(f"http://127.0.0.1:{port}/a", auth)[0] == 502  # in: the shard is down
        assert get(f"http://127.0.0.1:{port}/a")[0] == 401
        keys_cmd(tmp_path, "revoke", "--file", "keys.toml", "--partner", "acme")
        proc.send_signal(signal.SIGHUP)
        lines += wait_for_line(proc, "reloaded")
        assert get(f"http://127.0.0.1:{port}/a", auth)[0] == 401  # revoked
    finally:
        code, out = stop(proc)
    assert code == 0, out
    out = "".join(lines) + out
    assert key not in out and "NO AUTHENTICATION" not in out


def test_keys_from_a_systemd_credential_work_and_are_read_from_the_copy(tmp_path):
    port = listen_port()
    key = keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme",
                   "--scope", "/a").stdout.splitlines()[-1]
    creds = tmp_path / "credentials"  # what systemd's LoadCredential= makes
    creds.mkdir()
    (creds / "keys").write_text((tmp_path / "keys.toml").read_text())
    cfg = _gateway_config(tmp_path, port)
    cfg.write_text(cfg.read_text().replace(f'keys_file = "{tmp_path / "keys.toml"}"',
                                           'keys_credential = "keys"'))
    proc = twistd(tmp_path, "--config", str(cfg), extra_env={"CREDENTIALS_DIRECTORY": str(creds)})
    try:
        wait_for_line(proc, "listening on")
        auth = {"Authorization": f"Bearer {key}"}
        assert get(f"http://127.0.0.1:{port}/a", auth)[0] == 502  # in: the shard is down
        assert get(f"http://127.0.0.1:{port}/a")[0] == 401
        # Revoked in the source file: the credential is systemd's copy, unchanged until a
        # restart, so the key still works after a reload (as the README says).
        keys_cmd(tmp_path, "revoke", "--file", "keys.toml", "--partner", "acme")
        proc.send_signal(signal.SIGHUP)
        wait_for_line(proc, "reloaded")
        assert get(f"http://127.0.0.1:{port}/a", auth)[0] == 502
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert key not in out


def test_no_auth_on_a_public_address_is_a_loud_warning(tmp_path):
    port = free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[server]\nlisten = "tcp:{port}:interface=0.0.0.0"\n'
                   f'[shards.s1]\nurls = ["http://127.0.0.1:{free_port()}"]\n'
                   '[[routes]]\npath = "/a"\nmode = "scatter"\nitems = "data.item"\n')
    proc = twistd(tmp_path, "--config", str(cfg))
    try:
        line = wait_for_line(proc, "NO AUTHENTICATION")[-1]
        assert "0.0.0.0" in line and "shardstream-keys" in line
    finally:
        stop(proc)


@pytest.mark.skipif(not (Path(sys.executable).parent / "shardstream-keys").exists(),
                    reason="the package is not installed in this environment")
def test_the_command_is_installed():
    out = subprocess.run([str(Path(sys.executable).parent / "shardstream-keys"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "add" in out.stdout and "revoke" in out.stdout


def test_local_limits_with_workers_are_a_warning(tmp_path):
    port = listen_port()
    keys_cmd(tmp_path, "add", "--file", "keys.toml", "--partner", "acme", "--scope", "/a",
             "--rate", "5")
    cfg = _gateway_config(tmp_path, port, "workers = 2\n")
    proc = twistd(tmp_path, "--config", str(cfg))
    try:
        line = wait_for_line(proc, "rate limits are local")[-1]
        assert "2 workers" in line and "acme" in line and 'backend = "redis"' in line
    finally:
        stop(proc)
