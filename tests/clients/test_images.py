"""The image archive through real clients against the demo server (whose demo includes
simulated raws processed by the pipelines): pyvo's SIA2 search, SODA cutouts and DataLink;
mocpy on the MOCs; regeneration of a deleted processed visit image; the bad-input answers."""
import io
import math
import os

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

import pyvo

RUN = "single-visit"
# The DataLink core vocabulary's #calibration with its narrower terms, spelled out: pyvo
# would fetch the vocabulary from ivoa.net to expand them, and the tests run offline.
CALIBRATION = ["#calibration", "#bias", "#dark", "#flat"]


@pytest.fixture(scope="module")
def sia(base_url):
    return pyvo.dal.SIA2Service(base_url + "/sia")


@pytest.fixture(scope="module")
def pvis(sia):
    rows = sia.search(collection=RUN, maxrec=1000).to_table()
    assert len(rows) >= 4, "the demo should hold several processed visit images"
    return rows


def corners(row):
    words = row["s_region"].split()
    assert words[:2] == ["Polygon", "ICRS"]
    v = [float(w) for w in words[2:]]
    return list(zip(v[0::2], v[1::2]))


def tangent(ra0, dec0, ra, dec):
    """Gnomonic projection about (ra0, dec0), degrees on the tangent plane."""
    a0, d0, a, d = map(math.radians, (ra0, dec0, ra, dec))
    cosc = math.sin(d0) * math.sin(d) + math.cos(d0) * math.cos(d) * math.cos(a - a0)
    x = math.cos(d) * math.sin(a - a0) / cosc
    y = (math.cos(d0) * math.sin(d) - math.sin(d0) * math.cos(d) * math.cos(a - a0)) / cosc
    return math.degrees(x), math.degrees(y)


def circle_meets_polygon(ra, dec, r, poly):
    """Independent of Aster: in the tangent plane about the circle's centre (exact for
    the circle's radius, and the images are a few arcminutes wide)."""
    pts = [tangent(ra, dec, a, d) for a, d in poly]
    inside = False
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        if (y1 > 0) != (y2 > 0) and 0 < (x2 - x1) * (0 - y1) / (y2 - y1) + x1:
            inside = not inside
    if inside:
        return True
    rt = math.degrees(math.tan(math.radians(r)))
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        dx, dy = x2 - x1, y2 - y1
        t = max(0.0, min(1.0, -(x1 * dx + y1 * dy) / (dx * dx + dy * dy)))
        if math.hypot(x1 + t * dx, y1 + t * dy) <= rt:
            return True
    return False


def test_sia2_position_search_returns_exactly_the_overlapping_images(sia, pvis):
    # A circle on a corner of one image: it meets some images and misses others.
    ra, dec = corners(pvis[0])[0]
    for r in (0.01, 0.03):
        expected = {
            row["obs_publisher_did"] for row in pvis if circle_meets_polygon(ra, dec, r, corners(row))
        }
        got = sia.search(pos=(ra, dec, r), collection=RUN).to_table()
        assert set(got["obs_publisher_did"]) == expected
        assert 0 < len(expected) < len(pvis)
    # A polygon (the same image's own footprint) finds it, and a far circle nothing.
    got = sia.search(pos=tuple(c for xy in corners(pvis[0]) for c in xy), collection=RUN).to_table()
    assert pvis[0]["obs_publisher_did"] in set(got["obs_publisher_did"])
    assert len(sia.search(pos=(180, 60, 0.5)).to_table()) == 0


def test_sia2_band_and_time_constraints(sia, pvis):
    # (pyvo takes plain numbers in degrees and metres; astropy 8 quantities trip its checks.)
    r_band = (560e-9, 680e-9)
    got = sia.search(band=r_band, collection=RUN).to_table()
    expected = {row["obs_publisher_did"] for row in pvis if row["em_min"] <= 680e-9 and row["em_max"] >= 560e-9}
    assert set(got["obs_publisher_did"]) == expected and 0 < len(expected) < len(pvis)
    one = pvis[1]
    t = (Time(one["t_min"], format="mjd"), Time(one["t_max"], format="mjd"))
    got = sia.search(time=t, collection=RUN).to_table()
    expected = {row["obs_publisher_did"] for row in pvis if row["t_min"] <= one["t_max"] and row["t_max"] >= one["t_min"]}
    assert set(got["obs_publisher_did"]) == expected
    assert one["obs_publisher_did"] in expected and len(expected) < len(pvis)
    # Raws are in the archive too: calib level 1, footprints from the telescope's pointing.
    raws = sia.search(collection="raw", calib_level=1, pos=(float(one["s_ra"]), float(one["s_dec"]), 0.01)).to_table()
    assert len(raws) >= 2 and set(raws["dataproduct_subtype"]) == {"raw"}


def record(base_url, did):
    """The registry's record of a dataset (REST, so the tests hold for either database)."""
    r = requests.get(f"{base_url}/api/datasets/{did.split('?', 1)[1]}", timeout=30)
    assert r.status_code == 200
    return r.json()


def test_datalink_lists_progenitors_from_provenance(base_url, sia, pvis):
    rec = sia.search(publisher_did=pvis[0]["obs_publisher_did"])[0]
    links = rec.getdatalink()
    data_id = record(base_url, pvis[0]["obs_publisher_did"])["data_id"]
    visit, detector = data_id["visit"], data_id["detector"]
    manifest = requests.get(
        base_url + "/api/manifest",
        params={"type": "raw", "visit": visit, "detector": detector},
        timeout=30,
    ).json()
    raws = {d["id"] for d in manifest["datasets"]}
    progenitors = {l.access_url.rsplit("/", 1)[1] for l in links.bysemantics("#progenitor", include_narrower=False)}
    assert progenitors == raws and len(raws) == 2  # the visit's two snaps
    calibs = {l.access_url.rsplit("/", 1)[1].split(".")[0] for l in links.bysemantics(CALIBRATION, include_narrower=False)}
    assert {"bias", "dark", "flat", "crosstalk", "defects"} <= calibs
    this = list(links.bysemantics("#this", include_narrower=False))
    assert len(this) == 1 and this[0].content_type == "image/fits"
    derived = {l.access_url.rsplit("/", 1)[1].split(".")[0] for l in links.bysemantics("#derivation", include_narrower=False)}
    assert "sources" in derived
    # The raw a progenitor link names downloads whole, with the checksum the registry holds.
    raw_link = next(iter(links.bysemantics("#progenitor", include_narrower=False)))
    body = requests.get(raw_link.access_url, timeout=60)
    assert body.status_code == 200 and len(body.content) == raw_link.content_length
    with fits.open(io.BytesIO(body.content)) as h:
        assert h[0].header["IMGTYPE"] == "SCIENCE" and h[0].header["VISIT"] == visit


def test_soda_circle_cutout_covers_the_circle_with_the_source_pixels(base_url, sia, pvis, data_dir):
    row = pvis[2]
    rec = sia.search(publisher_did=row["obs_publisher_did"])[0]
    ra, dec, r = row["s_ra"], row["s_dec"], 0.01
    stream = rec.processed(circle=(ra, dec, r))
    cut = fits.open(io.BytesIO(stream.read()))
    wcs = WCS(cut["IMAGE"].header)
    ny, nx = cut["IMAGE"].data.shape
    # Every point of the circle's edge falls on the cutout.
    for k in range(36):
        pa = math.radians(10 * k)
        d0 = math.radians(dec)
        d = math.asin(math.sin(d0) * math.cos(math.radians(r)) + math.cos(d0) * math.sin(math.radians(r)) * math.cos(pa))
        a = math.radians(ra) + math.atan2(math.sin(pa) * math.sin(math.radians(r)) * math.cos(d0), math.cos(math.radians(r)) - math.sin(d0) * math.sin(d))
        x, y = wcs.world_to_pixel_values(math.degrees(a), math.degrees(d))
        assert -0.5 <= x <= nx - 0.5 and -0.5 <= y <= ny - 0.5, (x, y)
    # And no more than the circle's box (0.2 arcsec pixels).
    assert max(nx, ny) <= 2 * r * 3600 / 0.2 + 3
    # The pixels are the source image's, at the place the WCSs agree on.
    path = record(base_url, row["obs_publisher_did"])["path"]
    with fits.open(os.path.join(data_dir, path)) as full:
        sky = wcs.pixel_to_world_values(0, 0)
        x0, y0 = WCS(full["IMAGE"].header).world_to_pixel_values(*sky)
        x0, y0 = int(round(float(x0))), int(round(float(y0)))
        for plane in ("IMAGE", "MASK", "VARIANCE"):
            np.testing.assert_array_equal(cut[plane].data, full[plane].data[y0:y0 + ny, x0:x0 + nx])


def test_soda_answers_bad_input_in_its_own_words(base_url, pvis):
    did = pvis[0]["obs_publisher_did"]
    soda = base_url + "/soda/sync"
    far = requests.get(soda, params={"ID": did, "CIRCLE": "180 60 0.01"}, timeout=30)
    assert far.status_code == 204 and far.content == b""
    bad = requests.get(soda, params={"ID": did, "CIRCLE": "10 20"}, timeout=30)
    assert bad.status_code == 400 and bad.text.startswith("UsageError")
    two = requests.get(soda, params=[("ID", did), ("ID", did)], timeout=30)
    assert two.status_code == 400 and two.text.startswith("MultiValuedParamNotSupported")
    missing = requests.get(soda, params={"ID": "ivo://aster.survey/archive?nothing", "CIRCLE": "1 2 0.1"}, timeout=30)
    assert missing.status_code == 404 and missing.text.startswith("Error")
    png = requests.get(soda, params={"ID": did, "POS": f"CIRCLE {pvis[0]['s_ra']} {pvis[0]['s_dec']} 0.01", "RESPONSEFORMAT": "image/png"}, timeout=30)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    jpeg = requests.get(soda, params={"ID": did, "CIRCLE": f"{pvis[0]['s_ra']} {pvis[0]['s_dec']} 0.01", "RESPONSEFORMAT": "image/jpeg"}, timeout=30)
    assert jpeg.status_code == 200 and jpeg.headers["Content-Type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
    preview = requests.get(f"{base_url}/preview/{did.split('?', 1)[1]}", params={"format": "jpeg", "size": 256}, timeout=30)
    assert preview.status_code == 200 and preview.content[:2] == b"\xff\xd8"
    assert requests.get(f"{base_url}/preview/{did.split('?', 1)[1]}", params={"stretch": "cubic"}, timeout=30).status_code == 400
    sia = requests.get(base_url + "/sia/query", params={"POS": "CIRCLE 1 2"}, timeout=30)
    assert sia.status_code == 400 and "UsageFault" in sia.text
    links = requests.get(base_url + "/datalink/links", params={"ID": "ivo://aster.survey/archive?nothing"}, timeout=30)
    assert links.status_code == 200 and "NotFoundFault" in links.text


def test_files_resume_with_range_requests(base_url, pvis):
    dataset_id = pvis[0]["obs_publisher_did"].split("?", 1)[1]
    url = f"{base_url}/files/{dataset_id}"
    whole = requests.get(url, timeout=60)
    assert whole.status_code == 200 and whole.headers["Accept-Ranges"] == "bytes"
    tail = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=60)
    assert tail.status_code == 206 and tail.content == whole.content[1000:]
    assert tail.headers["Content-Range"] == f"bytes 1000-{len(whole.content) - 1}/{len(whole.content)}"
    beyond = requests.get(url, headers={"Range": f"bytes={len(whole.content)}-"}, timeout=60)
    assert beyond.status_code == 416


def test_mocpy_reads_the_mocs(base_url, pvis, tmp_path):
    from mocpy import MOC

    r = requests.get(f"{base_url}/moc/collections/{RUN}", timeout=60)
    assert r.status_code == 200
    path = tmp_path / "run.moc.fits"
    path.write_bytes(r.content)
    moc = MOC.from_fits(str(path))
    assert moc.contains_lonlat(np.asarray(pvis["s_ra"]) * u.deg, np.asarray(pvis["s_dec"]) * u.deg).all()
    assert not moc.contains_lonlat([180] * u.deg, [60] * u.deg).any()
    # One image's MOC as JSON: its centre in, its neighbours' far corners mostly out.
    dataset_id = pvis[0]["obs_publisher_did"].split("?", 1)[1]
    one = MOC.from_json(requests.get(f"{base_url}/moc/datasets/{dataset_id}?format=json", timeout=60).json())
    assert one.contains_lonlat([float(pvis[0]["s_ra"])] * u.deg, [float(pvis[0]["s_dec"])] * u.deg).all()
    sky_deg2 = one.sky_fraction * 41252.96
    side = pvis[0]["s_xel1"] * 0.2 / 3600
    # Cells of 13 arcsec along the edges make it a little larger than the image.
    assert side**2 < sky_deg2 < 1.6 * side**2
    assert moc.sky_fraction >= one.sky_fraction
    # Depth maps per band: the band's images lie in the area covered at least once, and
    # the area covered twice is within it.
    for row in pvis:
        dataset = row["obs_publisher_did"].split("?", 1)[1]
        b = dataset.rsplit("-", 1)[1]
        once = MOC.from_json(requests.get(f"{base_url}/moc/depth/{RUN}/{b}?min=1&format=json", timeout=60).json())
        assert once.contains_lonlat([float(row["s_ra"])] * u.deg, [float(row["s_dec"])] * u.deg).all()
        counts = requests.get(f"{base_url}/moc/depth/{RUN}/{b}?format=counts", timeout=60).json()
        n_band = sum(1 for r in pvis if r["obs_publisher_did"].endswith("-" + b))
        assert counts["order"] == 10 and 1 <= counts["max_depth"] <= n_band
    assert requests.get(f"{base_url}/moc/depth/{RUN}/nope", timeout=60).status_code == 404


def test_a_deleted_pvi_is_regenerated_within_tolerance(base_url, sia, pvis, data_dir):
    row = pvis[-1]
    path = os.path.join(data_dir, record(base_url, row["obs_publisher_did"])["path"])
    with fits.open(path) as f:
        original = {p: f[p].data.copy() for p in ("IMAGE", "MASK", "VARIANCE")}
        original_wcs = WCS(f["IMAGE"].header)
    os.remove(path)
    this = next(iter(sia.search(publisher_did=row["obs_publisher_did"])[0].getdatalink().bysemantics("#this", include_narrower=False)))
    r = requests.get(this.access_url, timeout=600)
    assert r.status_code == 200
    with fits.open(io.BytesIO(r.content)) as again:
        image = again["IMAGE"].data
        scale = np.nanstd(original["IMAGE"])
        assert np.nanmax(np.abs(image - original["IMAGE"])) <= 1e-4 * scale
        np.testing.assert_allclose(again["VARIANCE"].data, original["VARIANCE"], rtol=1e-5, atol=1e-6)
        assert (again["MASK"].data == original["MASK"]).mean() > 0.9999
        sky = original_wcs.pixel_to_world_values(100.0, 200.0)
        x, y = WCS(again["IMAGE"].header).world_to_pixel_values(*sky)
        assert math.hypot(float(x) - 100.0, float(y) - 200.0) < 1e-3
    # The archived location stays empty: the copy lives in the cache.
    assert not os.path.exists(path)


def test_bulk_download_resumes_and_verifies(base_url, tmp_path):
    import hashlib
    import json
    import subprocess

    api = base_url + "/api/manifest"
    m = requests.get(api, params={"collection": "calib", "type": "bias,dark"}, timeout=60).json()
    assert m["count"] == len(m["datasets"]) >= 4  # a bias and a dark for each CCD
    assert {d["type"] for d in m["datasets"]} == {"bias", "dark"}
    # By ADQL on ObsCore: the g and r processed images.
    adql = "SELECT obs_publisher_did FROM ivoa.ObsCore WHERE dataproduct_subtype = 'pvi' AND em_max < 7e-7"
    by_adql = requests.get(api, params={"adql": adql}, timeout=60).json()
    assert by_adql["count"] >= 1 and {d["type"] for d in by_adql["datasets"]} == {"calexp"}
    bad = requests.get(api, params={"type": "nonsense"}, timeout=60)
    assert bad.status_code == 400 and "type nonsense" in bad.json()["error"]

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(m))
    out = tmp_path / "out"
    first, second = m["datasets"][0], m["datasets"][1]
    # An interrupted download of the first (its true first half) and a corrupt one of the second.
    head = requests.get(first["url"], headers={"Range": f"bytes=0-{first['size'] // 2 - 1}"}, timeout=60)
    assert head.status_code == 206
    for d, content in ((first, head.content), (second, b"not the file" * 100)):
        part = out / (d["path"] + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(content)
    aster = os.environ["ASTER_BIN"]
    run = lambda: subprocess.run([aster, "download", str(manifest), "--output", str(out)], capture_output=True, text=True, timeout=600)
    r = run()
    assert r.returncode != 0 and second["id"] in r.stderr and "SHA-256" in r.stderr
    r = run()  # resumes: the corrupt part was removed, the rest are present
    assert r.returncode == 0, r.stderr
    assert "already present" in r.stdout
    for d in m["datasets"]:
        data = (out / d["path"]).read_bytes()
        assert len(data) == d["size"] and hashlib.sha256(data).hexdigest() == d["sha256"]
        assert not (out / (d["path"] + ".part")).exists()


def test_soda_async_cuts_each_id_as_a_uws_job(base_url, pvis):
    import time
    import xml.etree.ElementTree as ET

    ns = {"uws": "http://www.ivoa.net/xml/UWS/v1.0", "xlink": "http://www.w3.org/1999/xlink"}
    row = pvis[0]
    # The circle lies on the first image; another image far enough away gets an error text.
    far = next(r for r in pvis if not circle_meets_polygon(row["s_ra"], row["s_dec"], 0.005, corners(r)))
    created = requests.post(
        base_url + "/soda/async",
        data=[("ID", row["obs_publisher_did"]), ("ID", far["obs_publisher_did"]),
              ("CIRCLE", f"{row['s_ra']} {row['s_dec']} 0.005"), ("PHASE", "RUN")],
        timeout=30, allow_redirects=False,
    )
    assert created.status_code == 303
    job = created.headers["Location"]
    if job.startswith("/"):
        job = base_url + job
    deadline = time.time() + 300
    while True:
        doc = ET.fromstring(requests.get(job, params={"WAIT": 10}, timeout=60).content)
        phase = doc.find("uws:phase", ns).text
        if phase in ("COMPLETED", "ERROR", "ABORTED") or time.time() > deadline:
            break
    assert phase == "COMPLETED"
    results = {r.get("id"): r.get("{http://www.w3.org/1999/xlink}href") for r in doc.find("uws:results", ns)}
    assert set(results) == {"cutout-1", "cutout-2"}
    first = requests.get(results["cutout-1"], timeout=60)
    with fits.open(io.BytesIO(first.content)) as h:
        ny, nx = h["IMAGE"].data.shape
        assert max(nx, ny) <= 2 * 0.005 * 3600 / 0.2 + 3 and h["MASK"].data.shape == (ny, nx)
    second = requests.get(results["cutout-2"], timeout=60)
    assert second.text.startswith("Error") and "does not overlap" in second.text
    caps = requests.get(base_url + "/soda/capabilities", timeout=30).text
    assert "ivo://ivoa.net/std/SODA#async-1.0" in caps and "ivo://ivoa.net/std/SODA#sync-1.0" in caps


def test_ingest_raw_records_files_and_refuses_corrupt_and_duplicate_ones(base_url, data_dir, tmp_path):
    import glob
    import shutil
    import sqlite3
    import subprocess

    aster = os.environ["ASTER_BIN"]
    raws = sorted(glob.glob(os.path.join(data_dir, "raw", "*", "*", "*.fits")))
    assert len(raws) >= 3
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    good = [shutil.copy(p, incoming / f"good{i}.fits") for i, p in enumerate(raws[:2])]
    truncated = incoming / "truncated.fits"
    truncated.write_bytes(open(raws[2], "rb").read()[:20000])
    flipped = bytearray(open(raws[2], "rb").read())
    flipped[len(flipped) // 2] ^= 0xFF  # one byte inside an amplifier's data
    corrupt = incoming / "corrupt.fits"
    corrupt.write_bytes(bytes(flipped))
    archive = tmp_path / "archive"
    ingest = lambda *files: subprocess.run([aster, "--data-dir", str(archive), "ingest", "raw", *map(str, files)], capture_output=True, text=True, timeout=300)

    r = ingest(*good, truncated, corrupt)
    assert r.returncode != 0
    assert "2 ingested, 2 refused" in r.stdout
    refusals = [l for l in r.stderr.splitlines() if l.startswith("refused")]
    assert any("truncated.fits" in l for l in refusals) and any("corrupt.fits" in l for l in refusals)
    # Copied under raw/<night>/<exposure>/ and recorded with their checksums.
    db = sqlite3.connect(str(archive / "registry.sqlite3"))
    rows = db.execute("SELECT path, size FROM dataset WHERE dataset_type = 'raw'").fetchall()
    assert len(rows) == 2
    for path, size in rows:
        assert path.startswith("raw/") and os.path.getsize(archive / path) == size
    # The same file again, and under another name: refused, nothing changes.
    again = incoming / "renamed.fits"
    shutil.copy(good[0], again)
    r = ingest(good[1], again)
    assert r.returncode != 0 and "0 ingested, 2 refused" in r.stdout
    assert r.stderr.count("is already ingested as") == 2
    assert db.execute("SELECT COUNT(*) FROM dataset").fetchone()[0] == 2


def test_the_exposure_catalog_holds_every_raw_with_its_metadata(base_url, tap_url):
    tap = pyvo.dal.TAPService(tap_url)
    t = tap.search("SELECT dataset_id, img_type, visit, airmass, mjd_beg, mjd_end, exp_time, ccd_temp FROM archive.Exposure").to_table()
    raws = requests.get(base_url + "/api/manifest", params={"type": "raw"}, timeout=60).json()
    assert sorted(t["dataset_id"]) == sorted(d["id"] for d in raws["datasets"])
    science = t[t["img_type"] == "SCIENCE"]
    assert len(science) >= 8 and (science["airmass"] >= 1).all() and (science["visit"] > 0).all()
    assert (t["mjd_end"] >= t["mjd_beg"]).all() and set(t["img_type"]) >= {"BIAS", "DARK", "FLAT", "SCIENCE"}
    # And joined to ObsCore, the footprints of the science raws.
    j = tap.search(
        "SELECT e.visit, o.s_region FROM archive.Exposure AS e JOIN ivoa.ObsCore AS o "
        "ON o.obs_publisher_did = 'ivo://aster.survey/archive?' || e.dataset_id WHERE e.img_type = 'SCIENCE'"
    ).to_table()
    assert len(j) == len(science) and all(r.startswith("Polygon ICRS") for r in j["s_region"])


def test_a_run_that_keeps_no_calexps_records_them_for_regeneration(tmp_path):
    import sqlite3
    import subprocess

    aster = os.environ["ASTER_BIN"]
    d = tmp_path / "lean"
    run = lambda *a: subprocess.run([aster, "--data-dir", str(d), *map(str, a)], capture_output=True, text=True, timeout=900, check=True)
    run("simulate", "--visits", 1, "--ccd-size", 1024)
    run("calib", "build")
    here = os.path.dirname(os.path.abspath(__file__))
    text = open(os.path.join(here, "..", "..", "pipelines", "single-visit.yaml")).read()
    lean = tmp_path / "lean.yaml"
    lean.write_text(text.replace("run: single-visit", "run: lean").replace("keep_calexps: true", "keep_calexps: false"))
    run("pipeline", "run", lean)
    db = sqlite3.connect(str(d / "registry.sqlite3"))
    rows = db.execute("SELECT id, path, stored, config FROM dataset WHERE dataset_type = 'calexp'").fetchall()
    assert rows
    for _, path, stored, config in rows:
        assert stored == 0 and not (d / path).exists()
        assert '"keep_calexps":false' in config.replace(" ", "")
    kept = db.execute("SELECT path, stored FROM dataset WHERE dataset_type IN ('background', 'sources') AND collection = 'lean'").fetchall()
    assert kept and all(stored == 1 and (d / path).exists() for path, stored in kept)
