"""Coadds and HiPS through real clients against the demo server: the HiPS list and
properties against HiPS 1.0's mandatory keywords, mocpy on Moc.fits, a deepest-order tile's
pixels against the coadd resampled independently (astropy WCS, scipy, cdshealpix) at the
HEALPix positions HiPS defines, Aladin Desktop rendering a tile in script mode (its view kept in ASTER_TEST_SCREENSHOTS), caching
headers, the colour HiPS, and the coadds in ObsCore with their provenance."""
import io
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import requests
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS
from scipy.ndimage import map_coordinates

import cdshealpix
import pyvo
from mocpy import MOC

u_deg = u.deg
MANDATORY = ["creator_did", "obs_title", "dataproduct_type", "hips_version",
             "hips_release_date", "hips_status", "hips_tile_format", "hips_order",
             "hips_frame", "hips_tile_width"]
LIST_MANDATORY = ["creator_did", "hips_release_date", "hips_service_url", "hips_status"]


def parse_properties(text):
    props = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not keyword = value: {line!r}"
        assert key.strip() and " " not in key.strip()
        props[key.strip()] = value.strip()
    return props


@pytest.fixture(scope="module")
def hips_list(base_url):
    r = requests.get(base_url + "/hips/list", timeout=30)
    r.raise_for_status()
    assert r.headers["content-type"].startswith("text/plain")
    records = [parse_properties(block) for block in r.text.split("\n\n")
               if parse_properties(block)]
    return {rec["hips_service_url"].rsplit("/", 1)[1]: rec for rec in records}


def props_of(base_url, hid):
    r = requests.get(f"{base_url}/hips/{hid}/properties", timeout=30)
    r.raise_for_status()
    return parse_properties(r.text)


def test_the_list_names_every_band_the_all_band_and_colour_hips(hips_list, base_url):
    for hid in ["deep-g", "deep-r", "deep-i", "deep-z", "deep-all", "deep-color",
                "dp-object"]:
        assert hid in hips_list, sorted(hips_list)
        rec = hips_list[hid]
        for k in LIST_MANDATORY:
            assert rec.get(k), (hid, k)
        assert rec["hips_service_url"].startswith(base_url)


def test_properties_have_every_mandatory_keyword_in_the_standard_form(base_url, hips_list):
    for hid in hips_list:
        p = props_of(base_url, hid)
        catalog = p.get("dataproduct_type") == "catalog"
        for k in MANDATORY:
            if not (catalog and k == "hips_tile_width"):
                assert p.get(k), (hid, k)
        assert p["creator_did"].startswith("ivo://")
        assert p["hips_frame"] == "equatorial"
        assert 0 <= int(p["hips_order"]) <= 29
        if catalog:
            assert p["hips_tile_format"] == "tsv" and int(p["hips_cat_nrows"]) > 0
            continue
        assert p["dataproduct_type"] == "image"
        width = int(p["hips_tile_width"])
        assert width & (width - 1) == 0
        assert set(p["hips_tile_format"].split()) <= {"fits", "png", "jpeg"}
        assert set(p["hips_status"].split()) <= {"public", "private", "master", "mirror",
                                                   "partial", "clonable", "unclonable",
                                                   "clonableOnce"}
        import datetime
        datetime.datetime.strptime(p["hips_release_date"], "%Y-%m-%dT%H:%MZ")
    colour = props_of(base_url, "deep-color")
    assert colour["dataproduct_subtype"] == "color"
    assert "fits" not in colour["hips_tile_format"].split()
    r = props_of(base_url, "deep-r")
    assert "fits" in r["hips_tile_format"].split() and r["hips_pixel_bitpix"] == "-32"
    lo, hi = map(float, r["hips_pixel_cut"].split())
    assert lo < hi


def test_mocpy_reads_the_coverage_and_it_holds_the_tiles(base_url):
    p = props_of(base_url, "deep-r")
    r = requests.get(base_url + "/hips/deep-r/Moc.fits", timeout=30)
    r.raise_for_status()
    path = os.path.join(tempfile.mkdtemp(), "Moc.fits")
    with open(path, "wb") as f:
        f.write(r.content)
    moc = MOC.from_fits(path)
    assert moc.max_order == int(p["hips_order"])
    assert abs(moc.sky_fraction - float(p["moc_sky_fraction"])) < 1e-9
    # Every cell of the MOC at the deepest order is a tile that exists.
    order = int(p["hips_order"])
    cells = moc.flatten()
    assert len(cells) > 0
    for npix in list(cells)[:5]:
        d = npix // 10000 * 10000
        t = requests.get(f"{base_url}/hips/deep-r/Norder{order}/Dir{d}/Npix{npix}.fits",
                         timeout=30)
        assert t.status_code == 200, npix


def interleave(i, j):
    out = np.zeros_like(i, dtype=np.uint64)
    for b in range(16):
        out |= ((i >> b) & 1).astype(np.uint64) << np.uint64(2 * b)
        out |= ((j >> b) & 1).astype(np.uint64) << np.uint64(2 * b + 1)
    return out


def test_a_tiles_pixels_are_the_coadd_resampled_at_their_healpix_cells(base_url, data_dir):
    p = props_of(base_url, "deep-r")
    order, width = int(p["hips_order"]), int(p["hips_tile_width"])
    w_order = width.bit_length() - 1
    depth = order + w_order
    moc = MOC.from_fits(io.BytesIO(requests.get(base_url + "/hips/deep-r/Moc.fits",
                                                timeout=30).content))
    checked = 0
    for npix in list(moc.flatten())[:6]:
        d = npix // 10000 * 10000
        r = requests.get(f"{base_url}/hips/deep-r/Norder{order}/Dir{d}/Npix{npix}.fits",
                         timeout=30)
        r.raise_for_status()
        tile = fits.open(io.BytesIO(r.content))[0].data.astype(np.float64)
        assert tile.shape == (width, width)
        # FITS rows run bottom up: stored row s is row width-1-s from the top. HiPS puts
        # the row from the top on the even bits of the cell index, the column on the odd.
        s, x = np.mgrid[0:width:7, 0:width:7]
        y = width - 1 - s
        cells = (np.uint64(npix) << np.uint64(2 * w_order)) | interleave(y, x)
        lon, lat = cdshealpix.nested.healpix_to_lonlat(cells.ravel(), depth)
        # The coadd of the patch (order-10 HEALPix cell) each pixel lies in.
        patches = cells.ravel() >> np.uint64(2 * (depth - 10))
        values = tile[s, x].ravel()
        for patch in np.unique(patches):
            path = os.path.join(data_dir, "coadd", "deep", "r", f"p{int(patch)}.fits")
            if not os.path.exists(path):
                assert np.all(np.isnan(values[patches == patch]))
                continue
            with fits.open(path) as f:
                image = f["IMAGE"].data.astype(np.float64)
                wcs = WCS(f["IMAGE"].header)
            sel = patches == patch
            px, py = wcs.world_to_pixel_values(lon[sel].deg, lat[sel].deg)
            expected = map_coordinates(image, [py, px], order=1, mode="constant",
                                       cval=np.nan)
            got = values[sel]
            both = np.isfinite(expected) & np.isfinite(got)
            scale = np.nanstd(image)
            assert np.all(np.abs(got[both] - expected[both]) < 1e-3 * scale + 1e-4), \
                np.max(np.abs(got[both] - expected[both]))
            checked += both.sum()
    assert checked > 1000, checked


def test_the_parent_tile_is_the_mean_of_its_children(base_url):
    p = props_of(base_url, "deep-r")
    order = int(p["hips_order"])
    moc = MOC.from_fits(io.BytesIO(requests.get(base_url + "/hips/deep-r/Moc.fits",
                                                timeout=30).content))
    npix = int(list(moc.flatten())[0])
    parent = npix >> 2

    def tile(o, n):
        d = n // 10000 * 10000
        r = requests.get(f"{base_url}/hips/deep-r/Norder{o}/Dir{d}/Npix{n}.fits", timeout=30)
        return fits.open(io.BytesIO(r.content))[0].data if r.status_code == 200 else None

    up = tile(order - 1, parent)
    child = tile(order, npix)
    q = npix & 3
    w = up.shape[0]
    h = w // 2
    # Displayed: child 0 top-left, 1 bottom-left, 2 top-right, 3 bottom-right; FITS rows
    # bottom up, so "top" is the upper half of the stored rows.
    rows = slice(h, w) if q in (0, 2) else slice(0, h)
    cols = slice(0, h) if q in (0, 1) else slice(h, w)
    quarter = up[rows, cols]
    blocks = child.reshape(h, 2, h, 2)
    n = np.isfinite(blocks).sum(axis=(1, 3))
    binned = np.where(n > 0, np.nansum(blocks, axis=(1, 3)) / np.maximum(n, 1), np.nan)
    both = np.isfinite(quarter) & np.isfinite(binned)
    assert both.sum() > 100
    assert np.allclose(quarter[both], binned[both], rtol=1e-4, atol=1e-3)


def test_aladin_desktop_renders_the_hips_in_script_mode(base_url):
    aladin = "/usr/share/java/aladin.jar"
    assert os.path.exists(aladin), "scripts/setup installs Debian's aladin"
    # Centred on an r-band processed visit image, which the r coadds cover: the middle
    # of the view must show sky.
    pvi = pyvo.dal.TAPService(base_url + "/tap").search(
        "SELECT TOP 1 s_ra, s_dec FROM ivoa.ObsCore WHERE dataproduct_subtype = 'pvi' "
        "AND obs_publisher_did LIKE '%-r'").to_table()
    ra, dec = float(pvi["s_ra"][0]), float(pvi["s_dec"][0])
    out = os.path.join(os.environ.get("ASTER_TEST_SCREENSHOTS") or tempfile.mkdtemp(),
                       "aladin-deep-r.png")
    script = (f"load {base_url}/hips/deep-r;{ra} {dec};zoom 3arcmin;sync;"
              f"save {out};quit")
    from PIL import Image
    # Aladin draws progressively and `sync` may return before the deepest tiles are
    # drawn on a loaded machine: a view without sky is taken again (tiles now cached).
    for _ in range(3):
        if os.path.exists(out):
            os.remove(out)
        subprocess.run(["xvfb-run", "-a", "java", "-Xmx1024m", "-jar", aladin, "-nogui",
                        "-local", "-noreleasetest", "-nosamp", "-noplugin", "-nolog",
                        f"-script={script}"], timeout=300, check=True,
                       capture_output=True)
        assert os.path.exists(out), "Aladin saved no view"
        img = np.asarray(Image.open(out).convert("L"), dtype=float)
        h, w = img.shape
        centre = img[h // 3: 2 * h // 3, w // 3: 2 * w // 3]
        if centre.std() > 5 and len(np.unique(centre)) > 30:
            break
    # The middle of the view shows sky pixels: noise and sources, not a blank background.
    assert centre.std() > 5, centre.std()
    assert len(np.unique(centre)) > 30


def test_tiles_are_cached_by_etag_and_open_to_other_origins(base_url):
    r = requests.get(base_url + "/hips/deep-r/Norder3/Allsky.png",
                     headers={"Origin": "https://aladin.cds.unistra.fr"}, timeout=30)
    r.raise_for_status()
    assert r.headers["content-type"] == "image/png"
    assert r.headers["access-control-allow-origin"] == "*"
    assert "max-age" in r.headers["cache-control"]
    etag = r.headers["etag"]
    again = requests.get(base_url + "/hips/deep-r/Norder3/Allsky.png",
                         headers={"If-None-Match": etag}, timeout=30)
    assert again.status_code == 304 and not again.content
    for bad in ["/hips/deep-r/../registry.sqlite3", "/hips/deep-r/build.json",
                "/hips/deep-r/Norder3/Dir0/Npix768.png", "/hips/no-such/properties",
                "/hips/deep-r/Norder3/Dir0/Npix00001.png"]:
        b = requests.get(base_url + bad, timeout=30)
        assert b.status_code == 404, bad
        assert b.text.strip(), bad


def test_colour_tiles_are_rgb_pictures(base_url):
    from PIL import Image
    p = props_of(base_url, "deep-color")
    order = int(p["hips_order"])
    moc = MOC.from_fits(io.BytesIO(requests.get(base_url + "/hips/deep-color/Moc.fits",
                                                timeout=30).content))
    npix = int(list(moc.flatten())[0])
    d = npix // 10000 * 10000
    for ext, mode in [("png", "RGBA"), ("jpg", "RGB")]:
        r = requests.get(f"{base_url}/hips/deep-color/Norder{order}/Dir{d}/Npix{npix}.{ext}",
                         timeout=30)
        r.raise_for_status()
        img = Image.open(io.BytesIO(r.content))
        assert img.mode == mode and img.size == (512, 512)
    allsky = Image.open(io.BytesIO(requests.get(
        base_url + "/hips/deep-color/Norder3/Allsky.jpg", timeout=30).content))
    assert allsky.size == (27 * 64, 29 * 64)


def test_coadds_are_in_obscore_with_their_calexps_as_provenance(tap_url, base_url):
    tap = pyvo.dal.TAPService(tap_url)
    rows = tap.search("SELECT obs_publisher_did, calib_level, em_min, em_max, s_region "
                      "FROM ivoa.ObsCore WHERE dataproduct_subtype = 'coadd'").to_table()
    assert len(rows) >= 5
    assert set(rows["calib_level"]) == {3}
    did = next(d for d in rows["obs_publisher_did"] if d.endswith("-r"))
    dataset = did.split("?", 1)[1]
    record = requests.get(f"{base_url}/api/datasets/{dataset}", timeout=30).json()
    inputs = record["provenance"]["inputs"]
    assert inputs and all(i.startswith("calexp.") for i in inputs)
    assert record["provenance"]["task"] == "coadd"


def test_the_object_catalog_hips_holds_every_row_once_brightest_at_the_top(base_url, tap_url):
    from astropy.io.votable import parse_single_table
    p = props_of(base_url, "dp-object")
    meta = parse_single_table(io.BytesIO(requests.get(
        base_url + "/hips/dp-object/metadata.xml", timeout=30).content))
    ucds = {f.name: f.ucd for f in meta.fields}
    assert ucds["coord_ra"] == "pos.eq.ra;meta.main"
    assert ucds["coord_dec"] == "pos.eq.dec;meta.main"
    moc = MOC.from_fits(io.BytesIO(requests.get(base_url + "/hips/dp-object/Moc.fits",
                                                timeout=30).content))
    session = requests.Session()
    seen = {}
    flux_by_tile = {}
    for order in range(int(p["hips_order_min"]), int(p["hips_order"]) + 1):
        # The tiles of this order that can exist: the MOC's cells degraded to it.
        cells = np.unique(moc.flatten() >> np.uint64(2 * (moc.max_order - order)))
        for npix in cells:
            npix = int(npix)
            d = npix // 10000 * 10000
            r = session.get(f"{base_url}/hips/dp-object/Norder{order}/Dir{d}/Npix{npix}.tsv",
                            timeout=30)
            if r.status_code == 404:
                continue
            r.raise_for_status()
            lines = r.text.splitlines()
            header = lines[0].split("\t")
            assert header[:3] == ["objectId", "coord_ra", "coord_dec"]
            fluxes = []
            for line in lines[1:]:
                v = line.split("\t")
                assert v[0] not in seen, f"object {v[0]} in two tiles"
                seen[v[0]] = (order, npix)
                fluxes.append(float(v[header.index("r_psfFlux")]))
                # The row lies in its tile.
                cell = cdshealpix.nested.lonlat_to_healpix(
                    np.array([float(v[1])]) * u_deg, np.array([float(v[2])]) * u_deg, order)
                assert int(cell[0]) == npix
            flux_by_tile[(order, npix)] = min(fluxes)
            parent = (order - 1, npix >> 2)
            if parent in flux_by_tile:
                # Everything in a tile is fainter than everything above it.
                assert max(fluxes) <= flux_by_tile[parent] + 1e-9
    assert len(seen) == int(p["hips_cat_nrows"])
    n = pyvo.dal.TAPService(tap_url).search(
        "SELECT COUNT(*) AS n FROM dp.Object").to_table()["n"][0]
    assert len(seen) == n


def test_any_region_is_drawn_in_colour_with_a_caption(base_url):
    from PIL import Image
    p = props_of(base_url, "deep-color")
    ra, dec = float(p["hips_initial_ra"]), float(p["hips_initial_dec"])
    r = requests.get(f"{base_url}/hips/deep-color/render", params={
        "ra": ra, "dec": dec, "fov": 0.2, "width": 640, "height": 480}, timeout=60)
    r.raise_for_status()
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-caption"].startswith(p["obs_title"])
    img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=float)
    assert img.shape == (480, 640, 3)
    # Colour: the channels differ somewhere (bands cover different parts and sources).
    assert np.abs(img[..., 0] - img[..., 1]).mean() > 1
    page = requests.get(f"{base_url}/hips/deep-color/render", params={
        "ra": ra, "dec": dec, "format": "html"}, timeout=60)
    assert "<figcaption>" in page.text and "render?" in page.text
    grey = requests.get(f"{base_url}/hips/deep-r/render", params={
        "ra": ra, "dec": dec, "fov": 0.1, "width": 100, "height": 50, "format": "png"},
        timeout=60)
    assert Image.open(io.BytesIO(grey.content)).size == (100, 50)
    for bad in [{"ra": ra}, {"ra": "x", "dec": dec}, {"ra": ra, "dec": dec, "fov": 50},
                {"ra": ra, "dec": dec, "width": 1e6}, {"ra": ra, "dec": dec, "format": "gif"}]:
        b = requests.get(f"{base_url}/hips/deep-color/render", params=bad, timeout=30)
        assert b.status_code == 400 and b.text.strip(), bad
