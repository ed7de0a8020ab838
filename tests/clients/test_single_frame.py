"""The command-line chain a user runs on images: `aster simulate ccd` writes a calibrated
CCD of the demo sky with its truth, `aster pipeline single-frame` measures it; pyarrow and
astropy read the results, which are checked against the truth independently."""
import os
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    exe = os.environ.get("ASTER_BIN")
    if not exe:
        pytest.fail("ASTER_BIN is not set: run scripts/test-all")
    d = tmp_path_factory.mktemp("single-frame")
    subprocess.run([exe, "simulate", "ccd", "--output", str(d / "ccd.fits"), "--size", "2048",
                    "--objects", "400000"], check=True, capture_output=True, timeout=300)
    subprocess.run([exe, "pipeline", "single-frame", str(d / "ccd.fits"), "--output", str(d / "out")],
                   check=True, capture_output=True, timeout=300)
    return d


def test_bright_stars_are_found_with_their_fluxes(run):
    truth = pq.read_table(run / "ccd.truth.parquet").to_pandas()
    src = pq.read_table(run / "out" / "ccd.sources.parquet")
    assert src.schema.field("psfFlux").metadata[b"unit"] == b"nJy"
    src = src.to_pandas()
    stars = truth[truth.isStar & (truth.snr >= 10) & truth.x.between(20, 2027) & truth.y.between(20, 2027)]
    assert len(stars) >= 10
    found = 0
    for _, t in stars.iterrows():
        d = np.hypot(src.x - t.x, src.y - t.y)
        i = d.idxmin()
        if d[i] < 1.5:
            found += 1
            s = src.loc[i]
            if not s.blended:
                assert abs(s.psfFlux - t.flux) < 6 * s.psfFluxErr, (t.to_dict(), s.to_dict())
                # Kron apertures hold nearly all of a star's light.
                assert abs(s.kronFlux - t.flux) < 6 * s.kronFluxErr + 0.02 * t.flux, (t.to_dict(), s.to_dict())
    assert found >= 0.95 * len(stars), f"{found} of {len(stars)}"
    # Bright galaxies larger than the seeing are resolved; stars are not.
    matched = [src.loc[np.hypot(src.x - t.x, src.y - t.y).idxmin()] for _, t in stars.iterrows()]
    assert np.mean([s.extendedness == 0 for s in matched]) >= 0.9


def test_calexp_opens_in_astropy_and_its_wcs_places_the_sources(run):
    src = pq.read_table(run / "out" / "ccd.sources.parquet").to_pandas()
    with fits.open(run / "out" / "ccd.calexp.fits") as h:
        assert h["MASK"].data.shape == (2048, 2048)
        detected = 1 << h["MASK"].header["MP_DETECTED"]
        assert (h["MASK"].data & detected).any()
        w = WCS(h["IMAGE"].header)
        ra, dec = w.all_pix2world(src.x.values, src.y.values, 0)
        sep = np.hypot((ra - src.coord_ra.values) * np.cos(np.radians(dec)), dec - src.coord_dec.values)
        assert sep.max() * 3.6e6 < 1.0


# Other cameras (DMS-REQ-0296): the same pixels as a plain single-HDU FITS image whose
# header carries a TPV WCS, as SCAMP writes them, and no PSF, mask or variance.

def _tpv_header(true_wcs, shape, offset_arcsec, pv):
    """A TPV header near the image's true WCS: CRVAL moved by offset_arcsec (east, north)
    and the given PV distortion coefficients on top."""
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TPV", "DEC--TPV"
    h["CRPIX1"], h["CRPIX2"] = true_wcs.wcs.crpix
    ra0, dec0 = true_wcs.wcs.crval
    h["CRVAL1"] = ra0 + offset_arcsec[0] / 3600 / np.cos(np.radians(dec0))
    h["CRVAL2"] = dec0 + offset_arcsec[1] / 3600
    cd = true_wcs.pixel_scale_matrix
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = cd[0, 0], cd[0, 1], cd[1, 0], cd[1, 1]
    h["RADESYS"] = "ICRS"
    for k, v in pv.items():
        h[k] = v
    h["GAIN"] = 1.0
    h["FILTER"] = "r SDSS"
    return h


# A few arcseconds of distortion at the corners of the 2048-pixel CCD (0.057 deg from its
# centre): third-order terms of ~1 deg^-2, as wide-field imagers have.
DISTORTION = {"PV1_1": 1.0, "PV1_7": 1.5, "PV1_9": -0.8, "PV1_5": 0.01,
              "PV2_1": 1.0, "PV2_8": 0.6, "PV2_10": 1.2, "PV2_6": -0.01}


@pytest.fixture(scope="module")
def plain(run):
    with fits.open(run / "ccd.fits") as h:
        image = h["IMAGE"].data.astype(np.float32)
        true_wcs = WCS(h["IMAGE"].header)
    return image, true_wcs


def _run_single_frame(run, name, args):
    exe = os.environ["ASTER_BIN"]
    out = subprocess.run([exe, "pipeline", "single-frame", str(run / name), "--output",
                          str(run / "other"), *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_without_a_catalogue_a_tpv_wcs_places_sources_as_wcslib_does(run, plain):
    image, true_wcs = plain
    header = _tpv_header(true_wcs, image.shape, (0.0, 0.0), DISTORTION)
    # An image extension, tile-compressed, behind an empty primary HDU.
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, header, quantize_level=-0.01)]
                 ).writeto(run / "tpv.fits.fz", overwrite=True)
    _run_single_frame(run, "tpv.fits.fz", [])
    with fits.open(run / "other" / "tpv.sources.fits") as h:
        src = h["SOURCE"].data
        units = {h["SOURCE"].header[f"TTYPE{i}"]: h["SOURCE"].header.get(f"TUNIT{i}")
                 for i in range(1, h["SOURCE"].header["TFIELDS"] + 1)}
    # Nothing calibrated the fluxes.
    assert units["psfFlux"] == "count"
    assert len(src) > 50
    # wcslib (through astropy) evaluates TPV as TAN with its own polynomial distortion.
    ra, dec = WCS(header).all_pix2world(src["x"], src["y"], 0)
    sep = np.hypot((ra - src["coord_ra"]) * np.cos(np.radians(dec)), dec - src["coord_dec"]) * 3.6e6
    assert sep.max() < 1.0, sep.max()
    # The distortion is real: the plain TAN part alone misplaces the corners by arcseconds.
    tan = header.copy()
    tan["CTYPE1"], tan["CTYPE2"] = "RA---TAN", "DEC--TAN"
    for k in DISTORTION:
        del tan[k]
    ra_t, dec_t = WCS(tan).all_pix2world(src["x"], src["y"], 0)
    assert (np.hypot((ra_t - ra) * np.cos(np.radians(dec)), dec_t - dec) * 3600).max() > 1


def test_bad_images_and_catalogues_are_refused_with_the_file_named(run, plain):
    image, true_wcs = plain
    fits.PrimaryHDU(image).writeto(run / "nowcs.fits", overwrite=True)
    fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.zeros(3))]).writeto(
        run / "table.fits", overwrite=True)
    with open(run / "nomag.csv", "w") as f:
        f.write("ra,dec\n1,2\n")
    header = _tpv_header(true_wcs, image.shape, (0, 0), {})
    fits.PrimaryHDU(image, header).writeto(run / "good.fits", overwrite=True)
    exe = os.environ["ASTER_BIN"]
    for name, args, wanted in [
        ("nowcs.fits", [], "no WCS"),
        ("table.fits", [], "no two-dimensional image"),
        ("good.fits", ["--refcat", str(run / "nomag.csv")], "no magnitude column"),
        ("good.fits", ["--refcat", str(run / "missing.csv")], "missing.csv"),
        ("good.fits", ["--set", "measure.threshold=-1"], "threshold"),
    ]:
        out = subprocess.run([exe, "pipeline", "single-frame", str(run / name), "--output",
                              str(run / "bad"), *args], capture_output=True, text=True, timeout=120)
        assert out.returncode != 0
        assert wanted in out.stderr, out.stderr
        assert "panicked" not in out.stderr
        if name != "good.fits":
            assert name in out.stderr, out.stderr
    assert not (run / "bad").exists() or not any((run / "bad").iterdir())
