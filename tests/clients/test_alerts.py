"""The demo's night of alert production (`aster night run`, issue 5): the figures script
over its records, and the Level 1 tables it filled, read back with pyvo. The night goes on
from a season of short nights before it (`[demo] night_season`), so the tables and the
alert archive hold those too; the checks against the night's own records keep to its
visits."""
import json
import csv
import pathlib
import subprocess
import sys

import pyvo

ROOT = pathlib.Path(__file__).resolve().parents[2]


def night(data_dir):
    d = pathlib.Path(data_dir) / "night"
    assert (d / "latency.jsonl").exists(), "serve --demo ran no night"
    return d


def visits(d):
    """The first and last visit of the night whose records are in `d`."""
    with open(d / "latency.jsonl") as f:
        v = [json.loads(line)["visit"] for line in f]
    return min(v), max(v)


def of_night(d, column="visit"):
    a, b = visits(d)
    return f"{column} BETWEEN {a} AND {b}"


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
        f"SELECT COUNT(*) AS n FROM ap.DiaSource WHERE {of_night(d)}").to_table()
    assert int(n["n"][0]) == len(rows)
    # Each DIASource belongs to a DIAObject or, for a catalogued asteroid, an SSObject.
    assert all(bool(r["diaObjectId"]) != bool(r["ssObjectId"]) for r in rows)
    # Every DIASource's DIAObject is in ap.DiaObject; its newest version counts them all.
    objects = {r["diaObjectId"] for r in rows if r["diaObjectId"]}
    t = service.search(
        "SELECT o.diaObjectId, o.nDiaSources FROM ap.DiaObject AS o "
        "JOIN (SELECT diaObjectId, MAX(validityStartMjdTai) AS v FROM ap.DiaObject "
        f"WHERE diaObjectId >= 3000000000000 GROUP BY diaObjectId) AS newest "
        "ON o.diaObjectId = newest.diaObjectId AND o.validityStartMjdTai = newest.v"
    ).to_table()
    assert objects <= {str(i) for i in t["diaObjectId"]}
    # ... over every night of the season, which the night went on from.
    counted = service.search(
        "SELECT diaObjectId, COUNT(*) AS n FROM ap.DiaSource "
        "WHERE diaObjectId >= 3000000000000 GROUP BY diaObjectId").to_table()
    per_object = {str(i): int(n) for i, n in zip(counted["diaObjectId"], counted["n"])}
    assert any(per_object[o] > sum(1 for r in rows if r["diaObjectId"] == o) for o in objects), \
        "no DIAObject of the night goes on from an earlier night"
    for i, n in zip(t["diaObjectId"], t["nDiaSources"]):
        assert int(n) == per_object[str(i)]
    # Forced photometry of the DIAObjects on every visit after they appeared.
    f = service.search(
        f"SELECT COUNT(*) AS n FROM ap.DiaForcedSource WHERE {of_night(d)}"
    ).to_table()
    assert int(f["n"][0]) >= len(objects)
    # The asteroids' DIASources have SSSource rows, whose orbits are in ap.mpc_orbits.
    ss_rows = {r["diaSourceId"]: r for r in rows if r["ssObjectId"]}
    assert ss_rows, "no DIASource of a known asteroid"
    ss = service.search(
        "SELECT s.diaSourceId, s.ssObjectId, s.ephOffset, s.topoRange, s.phaseAngle, o.e, o.a "
        "FROM ap.SSSource AS s JOIN ap.mpc_orbits AS o ON s.designation = o.designation "
        "JOIN ap.DiaSource AS d ON d.diaSourceId = s.diaSourceId "
        f"WHERE s.ssObjectId >= 4000000000000 AND {of_night(d, 'd.visit')}"
    ).to_table()
    assert {str(i) for i in ss["diaSourceId"]} == set(ss_rows)
    for i, o, off, delta, phase, e, a in zip(*(ss[c] for c in ss.colnames)):
        assert str(o) == ss_rows[str(i)]["ssObjectId"]
        # Matched within the radius, at asteroid distances, on bound orbits.
        assert 0 <= off < 1.0 and 1.0 < delta < 3.0 and 0 <= phase < 90
        assert 0 <= e < 1 and 1.5 < a < 6
    # After the night, each of them has its SSObject: its DIASources of the season counted,
    # its arc, and an absolute magnitude in the night's band near the truth the simulator
    # used.
    counted = service.search(
        "SELECT ssObjectId, COUNT(*) AS n FROM ap.SSSource GROUP BY ssObjectId").to_table()
    per_ss = {str(i): int(n) for i, n in zip(counted["ssObjectId"], counted["n"])}
    assert {r["ssObjectId"] for r in ss_rows.values()} <= set(per_ss)
    so = service.search(
        "SELECT ssObjectId, nObs, arc, r_H, r_HErr FROM ap.SSObject "
        "WHERE ssObjectId >= 4000000000000"
    ).to_table()
    assert {str(i): int(n) for i, n in zip(so["ssObjectId"], so["nObs"])} == per_ss
    with open(d / "ss_objects.csv", newline="") as f:
        truth = {(r["ssObjectId"], r["band"]): float(r["trueH"]) for r in csv.DictReader(f)}
    for i, n, arc, h, err in zip(*(so[c] for c in so.colnames)):
        assert 0 <= arc < 30
        assert abs(h - truth[(str(i), "r")]) < 5 * err + 0.05, (i, h, err)


def test_nearby_objects_and_the_dia_source_cross_match(tap_url, data_dir):
    """DMS-REQ-0271 and 0324: the Objects measured on the field's template are in
    dp.Object; each DIAObject has at most three stars and three galaxies of them within
    60 arcsec, nearest first, each with lnP; every DIASource has its own cross-match."""
    import math
    d = night(data_dir)
    with open(d / "objects.csv", newline="") as f:
        objects = {r["objectId"]: r for r in csv.DictReader(f)}
    with open(d / "dia_sources.csv", newline="") as f:
        sources = list(csv.DictReader(f))
    service = pyvo.dal.TAPService(tap_url)
    field = "objectId >= 5000000000000 AND objectId < 6000000000000"
    o = service.search(
        f"SELECT objectId, coord_ra, coord_dec, refExtendedness FROM dp.Object WHERE {field}"
    ).to_table()
    assert {str(i) for i in o["objectId"]} == set(objects)
    assert {float(e) for e in o["refExtendedness"]} == {0.0, 1.0}, "no stars or no galaxies"
    m = service.search(
        "SELECT m.diaObjectId, m.objectId, m.dist, m.lnP, o.refExtendedness, "
        "DISTANCE(POINT('ICRS', d.ra, d.dec), POINT('ICRS', o.coord_ra, o.coord_dec)) * 3600 AS sep "
        "FROM ap.DiaObject_To_Object_Match AS m "
        "JOIN dp.Object AS o ON o.objectId = m.objectId "
        "JOIN ap.DiaObject AS d ON d.diaObjectId = m.diaObjectId "
        "WHERE d.nDiaSources = 1 AND d.diaObjectId >= 3000000000000 "
        # Its first version only (later ones, after each night, are at the same place).
        "AND d.validityStartMjdTai = d.firstDiaSourceMjdTai"
    ).to_table()
    assert len(m) > 0
    by_object = {}
    for i, oid, dist, lnp, ext, sep in zip(*(m[c] for c in m.colnames)):
        # The distance is the one from the DIAObject's first position (its first version).
        assert dist <= 60.0 and lnp <= 0.0
        assert abs(dist - sep) < 0.01, (i, oid, dist, sep)
        by_object.setdefault(int(i), []).append((float(dist), float(ext), float(lnp)))
    for matches in by_object.values():
        assert sum(1 for _, e, _ in matches if e == 0.0) <= 3
        assert sum(1 for _, e, _ in matches if e == 1.0) <= 3
        # The identities are exclusive: their probabilities sum to at most one.
        assert sum(math.exp(p) for _, _, p in matches) <= 1.0 + 1e-4
    # Every DIASource of the night is cross-matched the same way.
    first, last = visits(d)
    x = service.search(
        "SELECT COUNT(DISTINCT diaSourceId) AS n, MAX(dist) AS far "
        "FROM ap.DiaSource_To_Object_Match "
        f"WHERE diaSourceId BETWEEN {first * 100000} AND {last * 100000 + 99999}"
    ).to_table()
    assert 0 < int(x["n"][0]) <= len(sources)
    assert float(x["far"][0]) <= 60.0


def test_faint_dia_sources_are_kept_apart_and_limited(tap_url, data_dir):
    """DMS-REQ-0270: DIASources under the threshold, in their own table, at most the
    configured sample per visit besides those at known asteroids' predicted places."""
    import numpy as np
    d = night(data_dir)
    with open(d / "faint_sources.csv", newline="") as f:
        faint = list(csv.DictReader(f))
    assert faint, "the night kept no faint DIASource"
    service = pyvo.dal.TAPService(tap_url)
    t = service.search(
        "SELECT visit, significance, snr, ssObjectId, diaSourceId FROM ap.FaintDiaSource "
        f"WHERE {of_night(d)}"
    ).to_table()
    assert len(t) == len(faint)
    sample = {}
    for visit, sig, ss in zip(t["visit"], t["significance"], t["ssObjectId"]):
        assert 4.0 <= abs(float(sig)) < 5.0
        if np.ma.is_masked(ss):
            sample[int(visit)] = sample.get(int(visit), 0) + 1
    assert sample and max(sample.values()) <= 50
    # They are not DIASources: no alert, no row in ap.DiaSource.
    clash = service.search(
        "SELECT COUNT(*) AS n FROM ap.DiaSource AS s JOIN ap.FaintDiaSource AS f "
        "ON s.diaSourceId = f.diaSourceId"
    ).to_table()
    assert int(clash["n"][0]) == 0


# The alerts: Avro with Rubin's published schema (lsst-alert-packet), one per DIASource,
# from the alert archive over HTTP.

def read_archive(base_url, **params):
    import requests
    r = requests.get(f"{base_url}/api/alerts", params=params, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/avro"
    return r.content


def test_every_dia_source_has_one_alert_that_the_alert_packet_schema_reads(base_url, data_dir):
    import io
    from lsst.alert.packet import Schema, get_latest_schema_version

    d = night(data_dir)
    with open(d / "dia_sources.csv", newline="") as f:
        rows = {int(r["diaSourceId"]): r for r in csv.DictReader(f)}
    schema = Schema.from_file()
    assert get_latest_schema_version() == (11, 1)
    body = read_archive(base_url, limit=100000)
    # Read with the package's own reader schema, not the one the file carries.
    writer, records = schema.retrieve_alerts(io.BytesIO(body))
    records = list(records)
    ids = [a["diaSourceId"] for a in records]
    assert len(ids) == len(set(ids)), "an alert is archived twice"
    first, last = visits(d)
    tonight = [a for a in records if first <= a["diaSource"]["visit"] <= last]
    assert {a["diaSourceId"] for a in tonight} == set(rows), "alerts and DIASources differ"
    # The archive, oldest first, holds the season's earlier alerts too: each alert's
    # history is its object's alerts before it, from every night.
    owner_of = {a["diaSourceId"]: (a["diaSource"]["diaObjectId"], a["diaSource"]["ssObjectId"])
                for a in records}
    visit_of = {a["diaSourceId"]: a["diaSource"]["visit"] for a in records}
    seen_by_object = {}
    for a in records:
        prv = [p["diaSourceId"] for p in a["prvDiaSources"]]
        assert all(owner_of[p] == owner_of[a["diaSourceId"]] for p in prv)
        assert all(visit_of[p] < a["diaSource"]["visit"] for p in prv)
        earlier = seen_by_object.setdefault(owner_of[a["diaSourceId"]], set())
        assert set(prv) == earlier
        earlier.add(a["diaSourceId"])
    for a in tonight:
        assert schema.validate(a)
        row = rows[a["diaSourceId"]]
        s = a["diaSource"]
        assert s["diaSourceId"] == a["diaSourceId"]
        assert abs(s["ra"] - float(row["ra"])) < 1e-7
        assert abs(s["psfFlux"] - float(row["psfFlux"])) <= 1e-3 * abs(float(row["psfFlux"])) + 1e-2
        if row["ssObjectId"]:
            # A known asteroid's: no DIAObject; its ephemeris and its orbit instead.
            owner = ("ss", int(row["ssObjectId"]))
            assert s["diaObjectId"] is None and s["ssObjectId"] == owner[1]
            assert a["diaObject"] is None
            assert a["ssSource"]["ssObjectId"] == owner[1]
            assert a["ssSource"]["diaSourceId"] == a["diaSourceId"]
            assert a["mpc_orbits"]["designation"] == a["ssSource"]["designation"]
            assert a["ssSource"]["ephOffset"] < 1.0
            assert a["prvDiaForcedSources"] == []
        else:
            owner = ("dia", int(row["diaObjectId"]))
            assert s["diaObjectId"] == owner[1] and s["ssObjectId"] is None
            assert a["diaObject"]["diaObjectId"] == s["diaObjectId"]
            assert a["ssSource"] is None and a["mpc_orbits"] is None
            assert all(f["diaObjectId"] == s["diaObjectId"] for f in a["prvDiaForcedSources"])
        # Round trip through the package's serializer gives the same record.
        assert schema.deserialize(schema.serialize(a)) == a
    # The file names its writer's schema: the same alert schema.
    assert writer.definition["name"] == "lsst.v11_1.alert"
    assert writer.get_schema_id() == 1101


def test_cutouts_are_fits_with_wcs_psf_variance_and_mask(base_url, data_dir):
    import io
    import requests
    from astropy.io import fits
    from astropy.wcs import WCS
    from lsst.alert.packet import Schema

    d = night(data_dir)
    with open(d / "dia_sources.csv", newline="") as f:
        row = max(csv.DictReader(f), key=lambda r: float(r["snr"]))
    r = requests.get(f"{base_url}/api/alerts/{row['diaSourceId']}", timeout=60)
    assert r.status_code == 200, r.text
    _, records = Schema.from_file().retrieve_alerts(io.BytesIO(r.content))
    (alert,) = list(records)
    for kind in ("cutoutDifference", "cutoutScience", "cutoutTemplate"):
        with fits.open(io.BytesIO(alert[kind])) as hdus:
            assert [h.name for h in hdus[1:]] == ["IMAGE", "MASK", "VARIANCE", "PSF"]
            assert hdus[0].header["DIASRCID"] == alert["diaSourceId"]
            image = hdus["IMAGE"]
            assert image.data.shape == (31, 31)
            assert (hdus["VARIANCE"].data > 0).all()
            assert hdus["MASK"].header["MP_EDGE"] >= 0
            assert abs(hdus["PSF"].data.sum() - 1) < 0.05
            # The WCS of the cutout puts the source at its pixel.
            x = alert["diaSource"]["x"] + hdus[0].header["LTV1"]
            y = alert["diaSource"]["y"] + hdus[0].header["LTV2"]
            ra, dec = WCS(image.header).all_pix2world([[x, y]], 0)[0]
            assert abs(ra - alert["diaSource"]["ra"]) * 3600 < 0.05
            assert abs(dec - alert["diaSource"]["dec"]) * 3600 < 0.05
    with fits.open(io.BytesIO(alert["cutoutDifference"])) as hdus:
        # The source is the brightest thing in its difference cutout.
        data = hdus["IMAGE"].data
        assert abs(data[15, 15]) > 5 * abs(data).mean()


def test_the_archive_answers_by_object_and_time_and_refuses_bad_parameters(base_url, data_dir):
    import io
    import requests
    from lsst.alert.packet import Schema

    schema = Schema.from_file()
    d = night(data_dir)
    with open(d / "dia_sources.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    per_object = {}
    for r in rows:
        if r["diaObjectId"]:
            per_object.setdefault(r["diaObjectId"], []).append(int(r["diaSourceId"]))
    obj, ids = max(per_object.items(), key=lambda kv: len(kv[1]))
    _, recs = schema.retrieve_alerts(io.BytesIO(read_archive(base_url, diaObjectId=obj)))
    recs = list(recs)
    # The night's, and the season's before it.
    assert set(ids) <= {a["diaSourceId"] for a in recs}
    assert all(a["diaSource"]["diaObjectId"] == int(obj) for a in recs)
    # A known asteroid's alerts, by its SSObject.
    per_ss = {}
    for r in rows:
        if r["ssObjectId"]:
            per_ss.setdefault(r["ssObjectId"], []).append(int(r["diaSourceId"]))
    ss, ids = max(per_ss.items(), key=lambda kv: len(kv[1]))
    _, recs = schema.retrieve_alerts(io.BytesIO(read_archive(base_url, ssObjectId=ss)))
    recs = list(recs)
    assert set(ids) <= {a["diaSourceId"] for a in recs}
    assert all(a["ssSource"]["ssObjectId"] == int(ss) for a in recs)
    # A time window holds the visits within it, and limit caps the count.
    times = sorted({a["diaSource"]["midpointMjdTai"] for a in schema.retrieve_alerts(
        io.BytesIO(read_archive(base_url, limit=100000)))[1]})
    assert len(times) >= 2
    _, recs = schema.retrieve_alerts(io.BytesIO(read_archive(
        base_url, since=times[1], until=times[1] + 1e-6)))
    recs = list(recs)
    assert recs and all(a["diaSource"]["midpointMjdTai"] == times[1] for a in recs)
    _, recs = schema.retrieve_alerts(io.BytesIO(read_archive(base_url, limit=3)))
    assert len(list(recs)) == 3
    for params, word in [
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"diaObjectId": "x"}, "diaObjectId"),
        ({"ssObjectId": "1.5"}, "ssObjectId"),
        ({"colour": "red"}, "unknown parameter"),
        ({"since": "61010", "until": "61000"}, "before"),
    ]:
        r = requests.get(f"{base_url}/api/alerts", params=params, timeout=30)
        assert r.status_code == 400 and word in r.text, (params, r.text)
    assert requests.get(f"{base_url}/api/alerts/notanumber", timeout=30).status_code == 400
    r = requests.get(f"{base_url}/api/alerts/12345", timeout=30)
    assert r.status_code == 404 and "no alert" in r.text


def test_kafka_mock_of_the_demo_carries_the_night(base_url, data_dir):
    """serve --demo starts librdkafka's mock cluster and puts the night's alerts on it. The
    mock keeps only the newest 5 MB of a partition (librdkafka's own limit), so a consumer
    that comes later finds the newest alerts, in order, from some point on: a tail of the
    archive. (Every alert through an outage: test_alert_distribution.py.)"""
    import io
    import struct
    import time
    import requests
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    from lsst.alert.packet import Schema

    streams = requests.get(f"{base_url}/api/alerts/streams", timeout=30).json()
    assert streams["kafka"]["mock_cluster"] is True
    _, recs = Schema.from_file().retrieve_alerts(io.BytesIO(read_archive(base_url, limit=100000)))
    order = [a["diaSourceId"] for a in recs]
    c = Consumer({"bootstrap.servers": streams["kafka"]["bootstrap_servers"],
                  "group.id": "demo-test"})
    c.assign([TopicPartition(streams["kafka"]["topic"], 0, OFFSET_BEGINNING)])
    got = []
    end = time.time() + 120
    while time.time() < end and (not got or got[-1] != order[-1]):
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            assert struct.unpack(">bI", m.value()[:5]) == (0, 1101)
            got.append(int(m.key()))
    c.close()
    assert got and got == order[-len(got):]


def test_the_demo_alices_saved_filter_has_its_kafka_topic(base_url):
    """The demo's alice has saved the bright-new-transients filter: her topic on the demo's
    Kafka holds the season's alerts that pass it, each once, in order (the newest of them:
    the mock keeps 5 MB of a partition)."""
    import io
    import time
    import requests
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    from lsst.alert.packet import Schema

    streams = requests.get(f"{base_url}/api/alerts/streams", timeout=30).json()
    schema = Schema.from_file()
    _, recs = schema.retrieve_alerts(io.BytesIO(read_archive(base_url, limit=100000)))
    passing = sorted(
        a["diaSourceId"] for a in recs
        if a["diaObject"] is not None and a["diaObject"]["nDiaSources"] == 1
        and a["diaSource"]["psfFlux"] > 36300 and a["diaSource"]["reliability"] >= 0.5)
    assert passing, "no bright new transient in the demo's night"
    c = Consumer({"bootstrap.servers": streams["kafka"]["bootstrap_servers"],
                  "group.id": "demo-alice"})
    topic = f"{streams['kafka']['topic']}.alice"
    # Made by the mock when first written to, with its default partitions: all are read.
    partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    got = []
    end = time.time() + 120
    while time.time() < end and passing[-1] not in got:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            got.append(int(m.key()))
    c.close()
    # Each once, and the newest of them among them.
    assert got and len(got) == len(set(got)) and set(got) <= set(passing)
    assert passing[-1] in got


def test_users_save_filters_and_follow_them_alone(base_url, tokens):
    import json
    import requests
    from conftest import bearer

    r = requests.post(f"{base_url}/api/filters", headers=bearer(tokens["alice"]),
                      json={"name": "bright", "filter": "diaSource.snr > 20"}, timeout=30)
    assert r.status_code == 201, r.text
    f = r.json()
    again = requests.post(f"{base_url}/api/filters", headers=bearer(tokens["alice"]),
                          json={"name": "bright", "predefined": "high-snr"}, timeout=30)
    assert again.status_code == 409
    bad = requests.post(f"{base_url}/api/filters", headers=bearer(tokens["alice"]),
                        json={"name": "broken", "filter": "diaSource.snr >>> 2"}, timeout=30)
    assert bad.status_code == 400 and "filter" in bad.text
    ro = requests.post(f"{base_url}/api/filters", headers=bearer(tokens["alice_read"]),
                       json={"name": "x", "filter": "snr > 1"}, timeout=30)
    assert ro.status_code == 403
    mine = requests.get(f"{base_url}/api/filters", headers=bearer(tokens["alice"]), timeout=30).json()
    # The demo's alice already follows bright new transients.
    assert [m["name"] for m in mine["mine"]] == ["bright-new-transients", "bright"]
    # Another user can neither follow nor delete it.
    stream = f"{base_url}{f['stream']}"
    assert requests.get(stream, headers=bearer(tokens["bob"]), timeout=30).status_code == 403
    assert requests.delete(f"{base_url}/api/filters/{f['id']}", headers=bearer(tokens["bob"]),
                           timeout=30).status_code == 403
    # Its owner follows it from the start of the archive: the night's bright alerts.
    with requests.get(stream, headers={**bearer(tokens["alice"]), "Last-Event-ID": "0"},
                      stream=True, timeout=(10, 60)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines(chunk_size=1 << 16, decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                break
    got = requests.get(f"{base_url}/api/alerts/{event['alertId']}", timeout=30)
    assert got.status_code == 200
    assert requests.delete(f"{base_url}/api/filters/{f['id']}", headers=bearer(tokens["alice"]),
                           timeout=30).status_code == 204


def streamed(base_url, predefined, n):
    """The ids of the first `n` alerts a predefined filter's stream gives from the start of
    the archive."""
    import json
    import requests

    got = set()
    with requests.get(f"{base_url}/api/alerts/stream",
                      params={"predefined": predefined, "after": 0},
                      stream=True, timeout=(10, 60)) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines(chunk_size=1 << 16, decode_unicode=True):
            if line and line.startswith("data:"):
                got.add(json.loads(line[5:])["alertId"])
                if len(got) >= n:
                    break
    return got


def test_the_moving_objects_filter_streams_the_known_asteroids(base_url, data_dir):
    import io
    from lsst.alert.packet import Schema

    with open(night(data_dir) / "dia_sources.csv", newline="") as f:
        tonight = {int(r["diaSourceId"]) for r in csv.DictReader(f) if r["ssObjectId"]}
    assert tonight
    # The season's, from the start of the archive.
    _, recs = Schema.from_file().retrieve_alerts(io.BytesIO(read_archive(base_url, limit=100000)))
    expected = {a["diaSourceId"] for a in recs if a["diaSource"]["ssObjectId"] is not None}
    assert tonight <= expected
    assert streamed(base_url, "moving-objects", len(expected)) == expected


def test_the_nuclear_transients_filter_streams_changes_at_a_galaxys_centre(base_url, tap_url):
    """The alert schema carries no host; the filters see one: of the galaxies the Level 1
    database matched to a DIASource, the likeliest. The predefined nuclear-transients filter
    passes the confident brightenings within 0.5 arcsec of their host's centre."""
    service = pyvo.dal.TAPService(tap_url)
    m = service.search(
        "SELECT m.diaSourceId, m.dist, m.lnP FROM ap.DiaSource_To_Object_Match AS m "
        "JOIN dp.Object AS o ON o.objectId = m.objectId WHERE o.refExtendedness = 1"
    ).to_table()
    host = {}
    for i, d, p in zip(m["diaSourceId"], m["dist"], m["lnP"]):
        if int(i) not in host or float(p) > host[int(i)][1]:
            host[int(i)] = (float(d), float(p))
    s = service.search(
        "SELECT diaSourceId FROM ap.DiaSource WHERE psfFlux > 0 AND snr >= 10 "
        "AND reliability >= 0.5 AND diaSourceId >= 900000000000"
    ).to_table()
    expected = {int(i) for i in s["diaSourceId"]
                if int(i) in host and host[int(i)][0] < 0.5 and host[int(i)][1] > -0.69}
    assert expected, "no nuclear transient in the demo"
    assert streamed(base_url, "nuclear-transients", len(expected)) == expected
