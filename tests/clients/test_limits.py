"""Resource allocation (DMS-REQ-0119): each caller's allocation is reported at
/auth/limits; jobs beyond the running allocation wait, QUEUED, and asking to run more than
may wait is refused with 429 and a message naming the limit; the TAP capabilities declare
the caller's execution duration. scripts/test-all gives the user dave no running jobs, one
waiting job and 600 s of execution, so his jobs stay where the limits put them."""
import subprocess

import requests

from conftest import _env, bearer


def cli(*args):
    return subprocess.run([_env("ASTER_BIN"), "--data-dir", _env("ASTER_TEST_DATA"), *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_limits_are_reported(base_url, tokens):
    anon = requests.get(base_url + "/auth/limits").json()
    assert anon["limits"]["source"] == "anonymous"
    alice = requests.get(base_url + "/auth/limits", headers=bearer(tokens["alice"])).json()
    assert alice["limits"]["async_jobs"] >= 1 and alice["limits"]["quota_bytes"] > 0
    assert alice["limits"]["async_jobs"] != anon["limits"]["async_jobs"] or \
        alice["limits"]["queued_jobs"] != anon["limits"]["queued_jobs"]


def test_jobs_wait_and_the_queue_has_an_end(base_url):
    cli("users", "add", "dave")
    dave = bearer(cli("token", "create", "--user", "dave"))
    mine = requests.get(base_url + "/auth/limits", headers=dave).json()
    assert mine["limits"]["source"] == "user dave"
    assert (mine["limits"]["async_jobs"], mine["limits"]["queued_jobs"]) == (0, 1)
    # TAPRegExt's execution duration in the capabilities is the caller's.
    caps = requests.get(base_url + "/tap/capabilities", headers=dave).text
    assert "<hard>600</hard>" in caps
    assert "<hard>600</hard>" not in requests.get(base_url + "/tap/capabilities").text

    def submit():
        r = requests.post(base_url + "/tap/async", headers=dave, allow_redirects=False,
                          data={"LANG": "ADQL", "QUERY": "SELECT TOP 1 objectId FROM dp.Object"})
        assert r.status_code == 303
        return r.headers["location"]

    first, second = submit(), submit()
    assert requests.post(first + "/phase", headers=dave, data={"PHASE": "RUN"}, allow_redirects=False).status_code == 303
    assert requests.get(first + "/phase", headers=dave).text == "QUEUED"
    r = requests.post(second + "/phase", headers=dave, data={"PHASE": "RUN"}, allow_redirects=False)
    assert r.status_code == 429
    assert "user dave" in r.text
    assert requests.get(second + "/phase", headers=dave).text == "PENDING"
    # Aborting the waiting job makes room in the queue.
    requests.post(first + "/phase", headers=dave, data={"PHASE": "ABORT"}, allow_redirects=False)
    assert requests.get(first + "/phase", headers=dave).text == "ABORTED"
    assert requests.post(second + "/phase", headers=dave, data={"PHASE": "RUN"}, allow_redirects=False).status_code == 303
    assert requests.get(second + "/phase", headers=dave).text == "QUEUED"
    usage = requests.get(base_url + "/auth/limits", headers=dave).json()
    assert (usage["running"], usage["queued"]) == (0, 1)
    requests.delete(first, headers=dave)
    requests.delete(second, headers=dave)
