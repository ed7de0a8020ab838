"""A season of nights (issue 5, DMS-REQ-0312, 0319): `aster night run --nights N` runs nights
one after another, each continuing the DIAObjects, alert history and asteroid summaries of
the nights before from the Level 1 database. Checked through TAP with pyvo, and the periods
Aster gives its DIAObjects against astropy's Lomb-Scargle periodogram of the same forced
light curves.

The test makes its own season on a fresh data directory and serves it with its own server."""
import io
import os
import subprocess

import numpy as np
import pytest
import requests
from conftest import aster_server

NIGHTS, VISITS = 12, 2
FIRST_VISIT, PER_NIGHT = 9_000_000, 1_000


@pytest.fixture(scope="module")
def season(tmp_path_factory):
    data = tmp_path_factory.mktemp("season")
    cli = [os.environ["ASTER_BIN"], "--data-dir", str(data), "night", "run",
           "--visits", str(VISITS), "--size", "512", "--stars", "100", "--galaxies", "20",
           "--variables", "10", "--transients", "6", "--asteroids", "3",
           "--template-visits", "2", "--out", str(data / "season")]
    subprocess.run(cli + ["--nights", str(NIGHTS)], check=True, timeout=900,
                   capture_output=True)
    with aster_server(data) as base:
        yield data, base, cli


def tap(base, adql):
    import pyvo
    return pyvo.dal.TAPService(f"{base}/tap").run_sync(adql).to_table()


def test_a_night_that_was_run_is_refused(season):
    _, _, cli = season
    again = subprocess.run(cli + ["--night", "3"], capture_output=True, text=True, timeout=300)
    assert again.returncode != 0
    assert "has been run" in again.stderr


def test_dia_objects_last_the_season(season):
    _, base, _ = season
    # Each DIAObject's nights: the variables, found on the first night, are the same
    # DIAObjects on the last one, and forced photometry measured them on every visit.
    t = tap(base, "SELECT diaObjectId, COUNT(*) AS n, MIN(visit) AS first_visit, MAX(visit) AS last_visit "
                  "FROM ap.DiaForcedSource GROUP BY diaObjectId")
    last_night = FIRST_VISIT + (NIGHTS - 1) * PER_NIGHT
    whole = t[(t["first_visit"] < FIRST_VISIT + PER_NIGHT) & (t["last_visit"] >= last_night)]
    assert len(whole) >= 5, "no DIAObject lasted from the first night to the last"
    assert all(int(n) == NIGHTS * VISITS for n in whole["n"])
    # No object id was given twice: each DIAObject's versions are one object's.
    ids = tap(base, "SELECT diaObjectId, MIN(firstDiaSourceMjdTai) AS a, "
                    "MAX(firstDiaSourceMjdTai) AS b FROM ap.DiaObject GROUP BY diaObjectId")
    assert all(abs(float(a) - float(b)) < 1e-9 for a, b in zip(ids["a"], ids["b"]))
    # The asteroids' summaries: one SSObject row each, over all the nights it was seen.
    ss = tap(base, "SELECT ssObjectId, nObs FROM ap.SSObject")
    assert len(ss) == len(set(int(i) for i in ss["ssObjectId"]))
    seen = tap(base, "SELECT ssObjectId, COUNT(*) AS n FROM ap.SSSource GROUP BY ssObjectId")
    counts = {int(i): int(n) for i, n in zip(seen["ssObjectId"], seen["n"])}
    assert counts and all(int(n) == counts.get(int(i), 0)
                          for i, n in zip(ss["ssObjectId"], ss["nObs"]))


def test_alerts_carry_history_from_earlier_nights(season):
    from lsst.alert.packet import Schema
    _, base, _ = season
    last_night = FIRST_VISIT + (NIGHTS - 1) * PER_NIGHT
    t = tap(base, "SELECT TOP 1 diaObjectId FROM ap.DiaSource "
                  f"WHERE visit >= {last_night} AND diaObjectId IS NOT NULL "
                  f"AND diaObjectId IN (SELECT diaObjectId FROM ap.DiaSource WHERE visit < {FIRST_VISIT + PER_NIGHT})")
    assert len(t) == 1
    obj = int(t["diaObjectId"][0])
    r = requests.get(f"{base}/api/alerts", params={"diaObjectId": obj, "limit": 1000},
                     timeout=60)
    _, alerts = Schema.from_file().retrieve_alerts(io.BytesIO(r.content))
    newest = max(alerts, key=lambda a: a["diaSource"]["midpointMjdTai"])
    assert newest["diaSource"]["visit"] >= last_night
    earlier = {s["visit"] // PER_NIGHT for s in newest["prvDiaSources"]}
    assert FIRST_VISIT // PER_NIGHT in earlier, "the first night is missing from prvDiaSources"
    forced = {s["visit"] for s in newest["prvDiaForcedSources"]}
    assert len(forced) >= (NIGHTS - 1) * VISITS


def test_periods_agree_with_astropy(season):
    from astropy.timeseries import LombScargle
    _, base, _ = season
    # The newest versions: the last night's daytime update.
    newest = float(tap(base, "SELECT MAX(validityStartMjdTai) AS m FROM ap.DiaObject")["m"][0])
    objects = tap(base, "SELECT diaObjectId, lombScarglePeriod, lombScarglePower, "
                        "lombScargleFalseAlarmProb, lombScargleNdata FROM ap.DiaObject "
                        f"WHERE validityStartMjdTai = {newest!r} AND lombScarglePeriod IS NOT NULL")
    assert len(objects) >= 5
    checked = 0
    for row in objects:
        lc = tap(base, "SELECT midpointMjdTai, psfFlux, psfFluxErr FROM ap.DiaForcedSource "
                       f"WHERE diaObjectId = {int(row['diaObjectId'])}")
        t = np.asarray(lc["midpointMjdTai"], float)
        y = np.asarray(lc["psfFlux"], float)
        dy = np.asarray(lc["psfFluxErr"], float)
        assert len(t) == int(row["lombScargleNdata"])
        ls = LombScargle(t, y, dy)
        period = float(row["lombScarglePeriod"])
        power = float(row["lombScarglePower"])
        # The same power at Aster's period (one band: one mean, one sinusoid).
        assert ls.power(1 / period) == pytest.approx(power, abs=2e-3)
        # And no higher peak anywhere astropy looks, on a grid finer than Aster's.
        span = t.max() - t.min()
        f = np.arange(1 / span, 10.0, 1 / (50 * span))
        assert ls.power(f).max() <= power + 2e-3
        fap = float(row["lombScargleFalseAlarmProb"])
        expected = ls.false_alarm_probability(power, method="baluev", maximum_frequency=10.0)
        if expected > 1e-6:
            assert fap == pytest.approx(expected, rel=0.05)
        checked += 1
    assert checked == len(objects)
