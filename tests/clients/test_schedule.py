"""The predicted visit schedule (DMS-REQ-0353): the demo's schedule as JSON and as a page,
publishing by POST with the observatory's token (validated whole) and by the command."""
import json
import os
import subprocess
import time

import pytest
import requests


def visit(mjd, **kw):
    v = {"mjd": mjd, "ra": 62.0, "dec": -37.0, "band": "r", "exptime": 30}
    v.update(kw)
    return v


def now_mjd():
    return (time.time() + 37) / 86400 + 40587


def test_the_demo_publishes_what_comes_next(base_url):
    r = requests.get(base_url + "/api/schedule", timeout=30)
    assert r.status_code == 200
    s = r.json()
    assert s["next"] is not None and s["next"]["mjd"] >= s["now_mjd"] - 1e-6
    mjds = [v["mjd"] for v in s["visits"]]
    assert mjds == sorted(mjds) and all(v["band"] in "ugrizy" for v in s["visits"])
    assert len(requests.get(base_url + "/api/schedule", params={"limit": 3}, timeout=30).json()["visits"]) == 3
    page = requests.get(base_url + "/schedule", timeout=30)
    assert page.status_code == 200 and "Predicted visit schedule" in page.text
    assert s["next"]["start_utc"] in page.text


def test_posting_needs_the_token_and_a_valid_schedule(base_url):
    token = os.environ.get("ASTER_TEST_SCHEDULE_TOKEN")
    if not token:
        pytest.fail("ASTER_TEST_SCHEDULE_TOKEN is not set: run scripts/test-all")
    api = base_url + "/api/schedule"
    t0 = now_mjd() + 0.01
    good = {"source": "test scheduler", "visits": [visit(t0 + i / 1000, band="gri"[i % 3]) for i in range(5)]}
    anonymous = requests.post(api, json=good, timeout=30)
    assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers
    wrong = requests.post(api, json=good, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    bad = {"source": "test", "visits": [visit(t0), visit(t0 - 0.1, band="w", dec=95)]}
    r = requests.post(api, json=bad, headers=auth, timeout=30)
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert len(errors) == 3 and all(e.startswith("visit 1") for e in errors), errors
    assert requests.post(api, data=b"{not json", headers=auth, timeout=30).status_code == 400
    r = requests.post(api, json=good, headers=auth, timeout=30)
    assert r.status_code == 201 and r.json()["visits"] == 5
    s = requests.get(api, timeout=30).json()
    assert s["source"] == "test scheduler" and [v["band"] for v in s["visits"]] == list("grigr")


def test_the_command_publishes_into_the_data_directory(tmp_path):
    aster = os.environ["ASTER_BIN"]
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"source": "cli", "visits": [visit(61000.5), visit(61000.6, rotation=10)]}))
    r = subprocess.run([aster, "--data-dir", str(tmp_path / "d"), "schedule", "publish", str(good)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "published 2 visits" in r.stdout, r.stderr
    kept = json.loads((tmp_path / "d" / "schedule.json").read_text())
    assert kept["source"] == "cli" and kept["published"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"source": "cli", "visits": [visit(61000.5, exptime=-1)]}))
    r = subprocess.run([aster, "--data-dir", str(tmp_path / "d"), "schedule", "publish", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "visit 0: exptime -1" in r.stderr
    assert json.loads((tmp_path / "d" / "schedule.json").read_text())["source"] == "cli"
