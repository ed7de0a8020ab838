"""Exposure files (one multi-extension FITS per product) opened by astropy: the planes, the
mask plane names, and a WCS that astropy evaluates to Aster's own sky positions (to 1 mas;
DMS-REQ-0030, 0072). The file and Aster's positions come from the Rust test
archive::exposure_file::tests::sample_for_external_readers, run by scripts/test-all."""
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS


@pytest.fixture(scope="module")
def artifacts():
    d = os.environ.get("ASTER_TEST_ARTIFACTS")
    if not d:
        pytest.fail("ASTER_TEST_ARTIFACTS is not set: run scripts/test-all")
    return d


def test_astropy_reads_planes_and_agrees_on_the_sky(artifacts):
    with fits.open(os.path.join(artifacts, "exposure.fits")) as h:
        assert [x.name for x in h] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
        image, mask, var = h["IMAGE"], h["MASK"], h["VARIANCE"]
        assert image.data.dtype.kind == "f" and image.data.dtype.itemsize == 4
        assert mask.data.dtype.kind == "i" and mask.data.dtype.itemsize == 4
        assert image.data.shape == mask.data.shape == var.data.shape == (23, 37)
        # SAT and CR at column 3, row 4, decoded through the header's plane names.
        bits = mask.data[4, 3]
        assert bits & (1 << mask.header["MP_SAT"]) and bits & (1 << mask.header["MP_CR"])
        assert h[0].header["FILTER"] == "r" and h[0].header["SNAPPAIR"] is True
        for hdu in (image, mask, var):
            w = WCS(hdu.header)
            assert w.has_distortion and w.sip is not None
            for line in open(os.path.join(artifacts, "exposure-sky.txt")):
                x, y, ra, dec = map(float, line.split())
                a_ra, a_dec = w.all_pix2world([[x, y]], 0)[0]
                d_ra = (a_ra - ra) * np.cos(np.radians(dec))
                assert np.hypot(d_ra, a_dec - dec) * 3.6e6 < 1.0, (x, y)
