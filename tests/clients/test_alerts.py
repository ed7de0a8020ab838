"""The demo's night of alert production (`aster night run`, issue 5): the figures script
over its records, and the Level 1 tables it filled, read back with pyvo."""
import csv
import pathlib
import subprocess
import sys

import pyvo

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The night's visit numbers (src/night.rs), apart from the demo release's.
NIGHT = "visit >= 9000000 AND visit < 10000000"


def night(data_dir):
    d = pathlib.Path(data_dir) / "night"
    assert (d / "latency.jsonl").exists(), "serve --demo ran no night"
    return d


def test_figures_meet_the_requirements(data_dir):
    d = night(data_dir)
    r = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "alert_figures.py"), str(d), "--check"],
        capture_output=True, text=True,
    )
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "transients with true SNR >= 6" in r.stdout


def test_level1_tables_hold_the_night(tap_url, data_dir):
    d = night(data_dir)
    with open(d / "dia_sources.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows, "the night found no DIASources"
    service = pyvo.dal.TAPService(tap_url)
    n = service.search(
        f"SELECT COUNT(*) AS n FROM ap.DiaSource WHERE {NIGHT}").to_table()
    assert int(n["n"][0]) == len(rows)
    # Every DIASource's DIAObject is in ap.DiaObject; its newest version counts them all.
    objects = {r["diaObjectId"] for r in rows}
    t = service.search(
        "SELECT o.diaObjectId, o.nDiaSources FROM ap.DiaObject AS o "
        "JOIN (SELECT diaObjectId, MAX(validityStartMjdTai) AS v FROM ap.DiaObject "
        f"WHERE diaObjectId >= 3000000000000 GROUP BY diaObjectId) AS newest "
        "ON o.diaObjectId = newest.diaObjectId AND o.validityStartMjdTai = newest.v"
    ).to_table()
    assert {str(i) for i in t["diaObjectId"]} == objects
    per_object = {}
    for r in rows:
        per_object[r["diaObjectId"]] = per_object.get(r["diaObjectId"], 0) + 1
    for i, n in zip(t["diaObjectId"], t["nDiaSources"]):
        assert int(n) == per_object[str(i)]
    # Forced photometry of the DIAObjects on every visit after they appeared.
    f = service.search(
        f"SELECT COUNT(*) AS n FROM ap.DiaForcedSource WHERE {NIGHT}"
    ).to_table()
    assert int(f["n"][0]) >= len(objects)
