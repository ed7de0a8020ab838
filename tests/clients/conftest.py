"""Fixtures for the client tests: the URL and data directory of the demo server that
scripts/test-all starts (ASTER_TEST_URL, ASTER_TEST_DATA)."""
import contextlib
import html
import os
import re
import socket
import subprocess
import time

import pytest
import requests


def _env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/test-all")
    return value


def free_port():
    """A port free on 127.0.0.1, for a server a test starts itself."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(check, seconds, what):
    """The first true value of `check()`, polled for up to `seconds`."""
    end = time.time() + seconds
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def aster_server(data, config=None):
    """An Aster server of a test's own on the data directory `data` (with the configuration
    file `config`), on a free port, logging to `data`/server.log, until the block ends:
    yields its base URL once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [os.environ["ASTER_BIN"]]
    if config is not None:
        args += ["--config", str(config)]
    args += ["--data-dir", str(data), "serve", "--addr", f"127.0.0.1:{port}"]
    with open(data / "server.log", "w") as log:
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            def up():
                try:
                    return requests.get(f"{base}/api/alerts/streams", timeout=5).ok
                except requests.ConnectionError:
                    assert p.poll() is None, (data / "server.log").read_text()
            wait_for(up, 120, "the server")
            yield base
        finally:
            p.terminate()
            p.wait(timeout=30)


@pytest.fixture(scope="session")
def base_url():
    return _env("ASTER_TEST_URL")


@pytest.fixture(scope="session")
def tap_url(base_url):
    return base_url + "/tap"


@pytest.fixture(scope="session")
def data_dir():
    return _env("ASTER_TEST_DATA")


def sign_in(base_url, user):
    """A requests session signed in as `user` through the demo's OpenID provider: the real
    authorization-code flow (PKCE, ID token checked against the provider's keys)."""
    s = requests.Session()
    r = s.get(base_url + "/auth/login", allow_redirects=False)
    assert r.status_code in (302, 303), r.text
    form = s.get(r.headers["location"])
    assert form.status_code == 200, form.text
    fields = {k: html.unescape(v) for k, v in re.findall(r'name="([a-z_]+)" value="([^"]*)"', form.text)}
    fields["user"] = user
    r = s.post(r.headers["location"].split("?")[0], data=fields, allow_redirects=False)
    assert r.status_code in (302, 303), r.text
    r = s.get(r.headers["location"], allow_redirects=False)
    assert r.status_code in (302, 303) and "aster_session" in r.headers.get("set-cookie", ""), r.text
    return s


def make_token(base_url, user, scopes="read write"):
    s = sign_in(base_url, user)
    r = s.post(base_url + "/auth/tokens", json={"label": "client tests", "scopes": scopes, "lifetime_days": 1})
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture(scope="session")
def tokens(base_url):
    """Write tokens of the demo's people (alice and bob share the group demo-collab, carol is
    outside it, admin is an administrator), made through sign-in; plus an expired one (made
    on the command line, the only way to get one) and a tampered one."""
    t = {u: make_token(base_url, u) for u in ("alice", "bob", "carol", "admin")}
    t["alice_read"] = make_token(base_url, "alice", "read")
    expired = subprocess.run(
        [_env("ASTER_BIN"), "--data-dir", _env("ASTER_TEST_DATA"), "token", "create",
         "--user", "alice", "--expires", "2020-01-01T00:00:00Z"],
        check=True, capture_output=True, text=True).stdout.strip()
    t["expired"] = expired
    last = t["alice"][-1]
    t["tampered"] = t["alice"][:-1] + ("A" if last != "A" else "B")
    return t


def bearer(token):
    return {"Authorization": f"Bearer {token}"} if token else {}
