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
