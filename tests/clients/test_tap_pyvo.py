"""TAP through real clients: pyvo and astropy against the demo server, checked against an
independent computation on the same rows read straight from the catalog's Parquet files."""
import glob
import io
import json
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import pyvo
import requests
from astropy.io import fits, votable
from astropy.table import Table

CENTER = (62.0, -37.0)
RADIUS = 0.5


def object_rows(data_dir, columns):
    """All dp.Object rows, read from the Parquet files of the newest manifest."""
    base = os.path.join(data_dir, "catalogs", "dp", "Object")
    manifest = sorted(glob.glob(os.path.join(base, "_aster", "manifest.*.json")))[-1]
    with open(manifest) as f:
        m = json.load(f)
    tables = [pq.read_table(os.path.join(base, df["path"]), columns=columns)
              for p in m["partitions"] for df in p["files"]]
    import pyarrow as pa
    return pa.concat_tables(tables).to_pandas()


def haversine(ra1, dec1, ra2, dec2):
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.minimum(h, 1.0))))


CONE = ("SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp.Object WHERE "
        f"CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {CENTER[0]}, {CENTER[1]}, {RADIUS})) = 1")


def expected_cone(data_dir):
    df = object_rows(data_dir, ["objectId", "coord_ra", "coord_dec", "r_psfFlux"])
    d = haversine(df.coord_ra.values, df.coord_dec.values, CENTER[0], CENTER[1])
    return df[d <= RADIUS]


def test_sync_cone_matches_independent_computation(tap_url, data_dir):
    service = pyvo.dal.TAPService(tap_url)
    result = service.search(CONE, maxrec=1_000_000).to_table()
    expected = expected_cone(data_dir)
    assert len(expected) > 100
    assert sorted(result["objectId"].tolist()) == sorted(expected.objectId.tolist())
    by_id = dict(zip(expected.objectId, expected.r_psfFlux))
    for oid, flux in zip(result["objectId"], result["r_psfFlux"]):
        assert flux == pytest.approx(by_id[oid], rel=1e-12)
    # Units and UCDs come through from the Felis schema.
    assert str(result["r_psfFlux"].unit) == "nJy"


def test_async_query(tap_url, data_dir):
    service = pyvo.dal.TAPService(tap_url)
    job = service.submit_job("SELECT COUNT(*) AS n FROM dp.Object WHERE r_psfFlux > abmag_to_nJy(24)")
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=120)
    assert job.phase == "COMPLETED", job.phase
    n = int(job.fetch_result().to_table()["n"][0])
    df = object_rows(data_dir, ["r_psfFlux"])
    assert n == int((df.r_psfFlux > 10 ** ((31.4 - 24) / 2.5)).sum())
    job.delete()


def test_upload_join(tap_url, data_dir):
    df = object_rows(data_dir, ["objectId", "g_psfFlux"]).head(500)
    upload = Table({"oid": df.objectId.values.astype(np.int64), "tag": np.arange(len(df), dtype=np.int32)})
    service = pyvo.dal.TAPService(tap_url)
    result = service.search(
        "SELECT u.tag, o.objectId, o.g_psfFlux FROM TAP_UPLOAD.mine AS u JOIN dp.Object AS o ON o.objectId = u.oid",
        uploads={"mine": upload},
    ).to_table()
    assert len(result) == len(df)
    got = {int(r["objectId"]): float(r["g_psfFlux"]) for r in result}
    for oid, flux in zip(df.objectId, df.g_psfFlux):
        assert got[int(oid)] == pytest.approx(flux, rel=1e-12)


def crossmatch_fixture(data_dir, n=2000, seed=5):
    """Upload positions: half near real objects (within 1.5 arcsec), half anywhere nearby."""
    rng = np.random.default_rng(seed)
    df = object_rows(data_dir, ["objectId", "coord_ra", "coord_dec"])
    near = df.sample(n // 2, random_state=seed)
    ra = np.concatenate([near.coord_ra.values + rng.uniform(-1.0, 1.0, n // 2) / 3600,
                         rng.uniform(df.coord_ra.min(), df.coord_ra.max(), n - n // 2)])
    dec = np.concatenate([near.coord_dec.values + rng.uniform(-1.0, 1.0, n // 2) / 3600,
                          rng.uniform(df.coord_dec.min(), df.coord_dec.max(), n - n // 2)])
    return df, Table({"uid": np.arange(n, dtype=np.int64), "ra": ra, "dec": dec})


def test_upload_crossmatch_matches_astropy(tap_url, data_dir):
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    df, upload = crossmatch_fixture(data_dir)
    radius = 2.0 / 3600
    service = pyvo.dal.TAPService(tap_url)
    result = service.search(
        "SELECT u.uid, o.objectId FROM dp.Object AS o JOIN TAP_UPLOAD.pos AS u "
        f"ON 1 = CONTAINS(POINT('ICRS', o.coord_ra, o.coord_dec), CIRCLE('ICRS', u.ra, u.dec, {radius}))",
        uploads={"pos": upload}, maxrec=1_000_000,
    ).to_table()
    got = sorted(zip(result["uid"].tolist(), result["objectId"].tolist()))
    # The same match, computed independently by astropy on the same rows.
    objects = SkyCoord(df.coord_ra.values * u.deg, df.coord_dec.values * u.deg)
    positions = SkyCoord(np.asarray(upload["ra"]) * u.deg, np.asarray(upload["dec"]) * u.deg)
    iu, io_, _, _ = objects.search_around_sky(positions, radius * u.deg)
    expected = sorted(zip(np.asarray(upload["uid"])[iu].tolist(), df.objectId.values[io_].tolist()))
    assert len(expected) >= 900
    assert got == expected

    # TOPCAT's "all rows" mode: a left join keeps every upload row, unmatched ones once.
    left = service.search(
        "SELECT u.uid, o.objectId FROM TAP_UPLOAD.pos AS u LEFT OUTER JOIN dp.Object AS o "
        f"ON DISTANCE(POINT('ICRS', o.coord_ra, o.coord_dec), POINT('ICRS', u.ra, u.dec)) < {radius}",
        uploads={"pos": upload}, maxrec=1_000_000,
    ).to_table()
    matched_uids = {uid for uid, _ in expected}
    assert len(left) == len(expected) + (len(upload) - len(matched_uids))


def test_upload_from_a_url_under_this_archive(tap_url):
    service = pyvo.dal.TAPService(tap_url)
    job = service.submit_job("SELECT TOP 25 objectId AS oid FROM dp.Object ORDER BY objectId")
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=120)
    assert job.phase == "COMPLETED", job.phase
    ids = sorted(int(x) for x in job.fetch_result().to_table()["oid"])
    # The previous job's result, fetched by URL (TAP upload-http), feeds the next query.
    r = requests.post(tap_url + "/sync", data={
        "LANG": "ADQL", "RESPONSEFORMAT": "csv",
        "QUERY": "SELECT o.objectId FROM TAP_UPLOAD.prev AS p JOIN dp.Object AS o ON o.objectId = p.oid",
        "UPLOAD": f"prev,{job.result_uri}",
    }, timeout=120)
    assert r.status_code == 200, r.text
    got = sorted(int(x) for x in r.text.split()[1:])
    assert got == ids
    job.delete()
    # Anywhere else is refused with an error document, and nothing is fetched.
    r = requests.post(tap_url + "/sync", data={
        "LANG": "ADQL", "QUERY": "SELECT * FROM TAP_UPLOAD.t",
        "UPLOAD": "t,http://169.254.169.254/latest/meta-data",
    }, timeout=60)
    assert r.status_code == 400
    status = votable.parse(io.BytesIO(r.content)).resources[0].infos
    assert any(i.name == "QUERY_STATUS" and i.value == "ERROR" for i in status)
    assert "does not fetch" in r.text


def test_maxrec_overflow(tap_url):
    service = pyvo.dal.TAPService(tap_url)
    result = service.search("SELECT objectId FROM dp.Object", maxrec=7)
    assert len(result) == 7
    assert result.query_status == "OVERFLOW"


@pytest.mark.parametrize("fmt", ["votable", "votable/td", "csv", "tsv", "fits", "parquet", "json"])
def test_every_response_format_reads_back(tap_url, data_dir, fmt):
    r = requests.post(tap_url + "/sync", data={"LANG": "ADQL", "QUERY": CONE, "RESPONSEFORMAT": fmt, "MAXREC": "1000000"}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    body = io.BytesIO(r.content)
    if fmt.startswith("votable"):
        t = votable.parse_single_table(body).to_table()
    elif fmt == "csv":
        t = Table.read(body, format="ascii.csv")
    elif fmt == "tsv":
        t = Table.read(body, format="ascii.tab")
    elif fmt == "fits":
        with fits.open(body) as hdul:
            t = Table(hdul[1].data)
    elif fmt == "parquet":
        t = Table.read(body, format="parquet")
    else:
        doc = json.loads(r.content)
        names = [c["name"] for c in doc["metadata"]]
        t = Table(rows=doc["data"], names=names)
    expected = expected_cone(data_dir)
    assert sorted(int(x) for x in t["objectId"]) == sorted(int(x) for x in expected.objectId)
    by_id = dict(zip(expected.objectId, expected.coord_ra))
    for oid, ra in zip(t["objectId"], t["coord_ra"]):
        assert float(ra) == pytest.approx(by_id[int(oid)], rel=1e-12)


def test_bad_adql_gives_error_votable_with_position(tap_url):
    r = requests.get(tap_url + "/sync", params={"LANG": "ADQL", "QUERY": "SELECT FROM dp.Object"}, timeout=30)
    assert r.status_code == 400
    t = votable.parse(io.BytesIO(r.content))
    status = [i for i in t.resources[0].infos if i.name == "QUERY_STATUS"][0]
    assert status.value == "ERROR"
    assert "line 1" in status.content


def test_query_history_records_queries(base_url, tap_url, tokens):
    """The history is the caller's own (DMS-REQ-0345): kept for a signed-in user, none
    for anonymous callers; tests/clients/test_auth.py checks who sees what."""
    auth = {"Authorization": "Bearer " + tokens["bob"]}
    requests.get(tap_url + "/sync", params={"LANG": "ADQL", "QUERY": "SELECT TOP 1 objectId FROM dp.Object"},
                 headers=auth, timeout=30)
    hist = requests.get(tap_url + "/history", headers=auth, timeout=30).json()
    assert any(h["query"] == "SELECT TOP 1 objectId FROM dp.Object" and h["status"] == "ok" for h in hist)
    assert requests.get(tap_url + "/history", timeout=30).status_code == 401


def test_metrics_endpoint(base_url):
    text = requests.get(base_url + "/metrics", timeout=30).text
    assert "aster_tap_queries_total" in text


def test_error_after_rows_is_never_a_complete_csv(tap_url):
    # Integer division by zero fails while rows stream; VOTable says so in a trailing
    # INFO, while CSV cannot, so the server must cut the transfer instead.
    q = "SELECT objectId / (objectId - 5) AS q FROM dp.Object"
    r = requests.get(tap_url + "/sync", params={"LANG": "ADQL", "QUERY": q, "RESPONSEFORMAT": "votable/td"}, timeout=60)
    assert 'value="ERROR"' in r.text.split("</TABLE>")[-1]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(tap_url + "/sync", params={"LANG": "ADQL", "QUERY": q, "RESPONSEFORMAT": "csv"}, timeout=60)


def test_table_search_finds_columns_by_the_words_of_their_names_and_descriptions(tap_url):
    import requests
    hits = requests.get(tap_url + "/search", params={"q": "dia object"}, timeout=30).json()
    assert any(h["table"] == "ap.DiaSource" and h["column"] == "diaObjectId" for h in hits)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    hits = requests.get(tap_url + "/search", params={"q": "provisional designation"},
                        timeout=30).json()
    # The orbit catalogue's designation columns, named for both words, come first.
    assert hits[0]["table"] == "ap.mpc_orbits"
    assert hits[0]["column"].endswith("_primary_provisional_designation")
    assert ("ap.SSObject", "designation") in [(h["table"], h["column"]) for h in hits]
    assert requests.get(tap_url + "/search", timeout=30).status_code == 400
    assert requests.get(tap_url + "/search", params={"q": "flux AND ("}, timeout=30).ok
