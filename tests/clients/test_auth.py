"""Sign-in, tokens, groups and the access matrix (DMS-REQ-0340, 0345).

Sign-in runs the real OpenID Connect flow against the demo's provider; tokens are made by
the signed-in users. Each protected endpoint is tried by every kind of caller (anonymous,
owner, group member, another user, administrator, expired token, tampered token), and
errors and listings are checked to say nothing about what the caller may not see."""
import requests
import pyvo

from conftest import bearer, sign_in

CALLERS = ["anonymous", "alice", "bob", "carol", "admin", "expired", "tampered"]


def get(base_url, path, who, tokens, **kw):
    token = None if who == "anonymous" else tokens[who]
    return requests.get(base_url + path, headers=bearer(token), allow_redirects=False, **kw)


def test_sign_in_gives_a_session(base_url):
    s = sign_in(base_url, "alice")
    me = s.get(base_url + "/auth/whoami").json()
    assert me["user"] == "alice"
    assert "demo-collab" in me["groups"]
    assert me["scopes"] == {"read": True, "write": True}
    # Every authenticated answer names the caller (IVOA SSO).
    assert s.get(base_url + "/tap/capabilities").headers["X-VO-Authenticated"] == "alice"
    s.get(base_url + "/auth/logout")
    assert s.get(base_url + "/auth/whoami").json() == {"user": None}


def test_a_callback_not_started_here_is_refused(base_url):
    r = requests.get(base_url + "/auth/callback", params={"code": "x", "state": "forged"})
    assert r.status_code == 400
    assert "sign in again" in r.text
    r = requests.get(base_url + "/auth/login", params={"then": "https://evil.example/"}, allow_redirects=False)
    # The provider is asked; where to go afterwards stays on this site.
    assert "evil.example" not in r.headers["location"]


def test_tokens_work_until_revoked_and_bad_ones_are_challenged(base_url, tokens):
    r = get(base_url, "/auth/whoami", "alice_read", tokens)
    assert r.json()["scopes"] == {"read": True, "write": False}
    for bad in ("expired", "tampered"):
        r = get(base_url, "/tap/capabilities", bad, tokens)
        assert r.status_code == 401
        challenges = r.headers["WWW-Authenticate"]
        assert 'error="invalid_token"' in challenges
        assert 'ivoa_bearer standard_id="ivo://ivoa.net/sso#OpenID"' in challenges
        assert "alice" not in r.text
    # TAP answers in its own form: a DALI error VOTable.
    r = get(base_url, "/tap/sync?LANG=ADQL&QUERY=SELECT+1", "tampered", tokens)
    assert r.status_code == 401 and "QUERY_STATUS" in r.text
    s = sign_in(base_url, "alice")
    made = s.post(base_url + "/auth/tokens", json={"label": "short-lived", "lifetime_days": 1}).json()
    listed = s.get(base_url + "/auth/tokens").json()
    assert made["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed), "secrets are shown once only"
    assert requests.get(base_url + "/auth/whoami", headers=bearer(made["token"])).json()["user"] == "alice"
    assert s.delete(base_url + f"/auth/tokens/{made['id']}").status_code == 204
    assert requests.get(base_url + "/auth/whoami", headers=bearer(made["token"])).status_code == 401
    # Nobody else can revoke (or learn of) alice's tokens.
    bob = sign_in(base_url, "bob")
    assert bob.delete(base_url + f"/auth/tokens/{listed[0]['id']}").status_code == 404
    # A read-only token cannot make a write token.
    r = requests.post(base_url + "/auth/tokens", headers=bearer(tokens["alice_read"]), json={})
    assert r.status_code == 403


def test_anonymous_capabilities_say_sign_in_is_possible(base_url):
    r = requests.get(base_url + "/tap/capabilities")
    assert r.status_code == 200
    assert "ivoa_cookie" in r.headers["WWW-Authenticate"]


def test_group_membership(base_url, tokens):
    r = get(base_url, "/gms/search?group=demo-collab&group=nosuch", "bob", tokens)
    assert r.text == "demo-collab\r\n"
    assert get(base_url, "/gms/search?group=demo-collab", "carol", tokens).text == ""
    assert get(base_url, "/gms/search", "anonymous", tokens).status_code == 401
    assert get(base_url, "/gms/search?user=bob", "carol", tokens).status_code == 403
    assert get(base_url, "/gms/search?user=bob&group=demo-collab", "admin", tokens).text == "demo-collab\r\n"
    # A group's members are shown to its members and administrators only.
    assert get(base_url, "/gms/groups/demo-collab", "bob", tokens).json()["owner"] == "alice"
    assert get(base_url, "/gms/groups/demo-collab", "carol", tokens).status_code == 404
    caps = requests.get(base_url + "/gms/capabilities").text
    assert "ivo://ivoa.net/std/gms#search-1.0" in caps


def test_history_is_each_users_own(base_url, tokens):
    marker = "SELECT TOP 1 objectId FROM dp.Object WHERE objectId > 7"
    session = requests.Session()
    session.headers.update(bearer(tokens["alice"]))
    tap = pyvo.dal.TAPService(base_url + "/tap", session=session)
    assert len(tap.search(marker)) == 1
    expected = {"anonymous": 401, "alice": 200, "bob": 200, "carol": 200, "admin": 200,
                "expired": 401, "tampered": 401}
    for who in CALLERS:
        r = get(base_url, "/tap/history", who, tokens)
        assert r.status_code == expected[who], (who, r.status_code)
        if r.status_code == 200:
            queries = [e["query"] for e in r.json()]
            assert (marker in queries) == (who == "alice"), who
            assert all(e["owner"] == who for e in r.json())
    everyone = get(base_url, "/tap/history?all=true", "admin", tokens).json()
    assert marker in [e["query"] for e in everyone]
    assert get(base_url, "/tap/history?all=true", "bob", tokens).status_code == 403


def test_async_jobs_belong_to_their_owner(base_url, tokens):
    r = requests.post(base_url + "/tap/async", headers=bearer(tokens["alice"]),
                      data={"LANG": "ADQL", "QUERY": "SELECT TOP 1 objectId FROM dp.Object"},
                      allow_redirects=False)
    assert r.status_code == 303
    job = r.headers["location"].split("/tap/async/")[1]
    expected = {"anonymous": 403, "alice": 200, "bob": 403, "carol": 403, "admin": 200,
                "expired": 401, "tampered": 401}
    for who in CALLERS:
        r = get(base_url, f"/tap/async/{job}", who, tokens)
        assert r.status_code == expected[who], (who, r.status_code)
        if r.status_code != 200:
            assert "SELECT" not in r.text, "a refusal shows nothing of the job"
        listing = get(base_url, "/tap/async", who, tokens)
        if listing.status_code == 200:
            assert (job in listing.text) == (who == "alice"), who
