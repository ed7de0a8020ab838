"""The processing core end to end, as a new user runs it: `aster simulate` writes raws,
`aster calib build` the calibration products, `aster pipeline run` the processed visit
images and the Source table; then the figures against the simulator's truth, astropy on
every kind of file, resuming, and bad input naming the file and the step."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "validation"))
import pipeline_truth  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "clients"))
from test_single_frame import DISTORTION, _tpv_header  # noqa: E402

PIPELINE = ROOT / "pipelines" / "single-visit.yaml"


def aster(*args, check=True):
    bin_ = os.environ.get("ASTER_BIN")
    if not bin_:
        pytest.fail("ASTER_BIN is not set: run scripts/test-all")
    r = subprocess.run([bin_, *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "RUST_BACKTRACE": "0"})
    if check and r.returncode != 0:
        pytest.fail(f"aster {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    d = tmp_path_factory.mktemp("survey")
    aster("--data-dir", d, "simulate", "--visits", 6, "--ccd-size", 2048)
    aster("--data-dir", d, "calib", "build")
    aster("--data-dir", d, "pipeline", "run", PIPELINE)
    return d


def test_measurements_meet_the_truth(survey):
    f = pipeline_truth.evaluate(survey, "single-visit")
    print(json.dumps(f, indent=2))
    assert f["ccd_visits"] == 6
    assert f["stars_snr10"] >= 300
    assert f["completeness_snr10"] >= 0.99, f
    assert 0.9 <= f["psf_pull_std"] <= 1.1, f
    assert f["astrometric_rms_mas"] <= 20.0, f
    assert f["zeropoint_max_abs_diff_mag"] <= 0.01, f
    # Asteroids cross the raws too, and single-visit processing finds them.
    assert f["asteroids_snr10"] >= 3, f
    assert f["asteroid_completeness_snr10"] >= 0.9, f


def test_raw_files_open_in_astropy_with_their_metadata(survey):
    raws = sorted((survey / "raw").rglob("AS_O_*.fits"))
    assert raws
    with fits.open(raws[0], checksum=True) as h:
        p = h[0].header
        # DMS-REQ-0068: TAI times with DUT1, site, telescope and camera state.
        assert p["TIMESYS"] == "TAI" and p["DATE-BEG"] < p["DATE-END"]
        for key in ["DUT1", "OBS-LAT", "OBS-LONG", "OBS-ELEV", "SEEING", "RA", "DEC", "ROTPA",
                    "AIRMASS", "FOCUSZ", "CCDTEMP", "SHUTMOTN", "FILTER", "VISIT", "SNAP"]:
            assert key in p, key
        amps = [x for x in h[1:]]
        assert len(amps) == 8
        for a in amps:
            assert a.data.dtype.kind == "u" or a.header["BZERO"] == 32768
            assert a.header["DATASEC"].startswith("[4:")
            assert a.header["GAIN"] > 1.0


def test_calibration_products_carry_their_provenance(survey):
    flat = survey / "calib" / "flat" / "R11_r.fits"
    with fits.open(flat, checksum=True) as h:
        p = h[0].header
        assert p["CALTYPE"] == "flat" and p["FILTER"] == "r"
        assert p["NINPUT"] == 3 and p["INPUT001"].startswith("AS_C_")
        assert p["CALDATE0"] <= p["CALDATE1"] and "aster" in p["SOFTWARE"]
        assert [p[f"USEDCAL{i}"] for i in range(1, p["NUSEDCAL"] + 1)] == ["crosstalk", "bias", "dark"]
        assert abs(np.nanmean(h["IMAGE"].data) - 1.0) < 0.01
    with fits.open(survey / "calib" / "defects" / "R11.fits") as h:
        assert h["DEFECTS"].data.dtype.kind == "i" and h["DEFECTS"].data.any()
    with fits.open(survey / "calib" / "monoflat" / "R11.fits") as h:
        assert h["IMAGE"].data.shape[0] == 5
    with fits.open(survey / "calib" / "crosstalk" / "R11.fits") as h:
        assert h["CROSSTALK"].data.shape == (8, 8)


def test_pvi_wcs_in_astropy_places_the_sources(survey):
    run = survey / "runs" / "single-visit"
    pvi = sorted((run / "pvi").glob("*.fits"))[0]
    src = pq.read_table(run / "sources" / (pvi.stem + ".parquet")).to_pandas()
    with fits.open(pvi, checksum=True) as h:
        assert h["IMAGE"].header["CTYPE1"] == "RA---TAN-SIP"
        w = WCS(h["IMAGE"].header)
        ra, dec = w.all_pix2world(src.x.values, src.y.values, 0)
        sep = np.hypot((ra - src.coord_ra.values) * np.cos(np.radians(dec)), dec - src.coord_dec.values)
        assert sep.max() * 3.6e6 < 1.0
        assert h[0].header["PHOTZP"] > 25
    bkg = run / "background" / pvi.name
    with fits.open(bkg) as h:
        assert h["BACKGROUND"].header["BKGBIN"] > 0


def test_another_cameras_tpv_image_is_refitted_against_a_csv_catalogue(survey, tmp_path):
    """DMS-REQ-0296: a processed CCD as another observatory would hand it over (one plain
    HDU, no mask, variance or PSF, a TPV header 2 arcsec off with a distortion the pixels do
    not have) and a reference catalogue as CSV; single-frame must find the true WCS and
    zeropoint again."""
    run = survey / "runs" / "single-visit"
    pvi = sorted((run / "pvi").glob("*.fits"))[0]
    with fits.open(pvi) as h:
        image = h["IMAGE"].data.astype(np.float32)
        wcs = WCS(h["IMAGE"].header)
        band = h[0].header["FILTER"]
        start, end = h[0].header["MJD-BEG"], h[0].header["MJD-END"]
    header = _tpv_header(wcs, image.shape, (2.0, -1.5), DISTORTION)
    header["FILTER"] = band
    header["MJD-OBS"] = start
    header["EXPTIME"] = (end - start) * 86400
    del header["GAIN"]
    fits.PrimaryHDU(image, header).writeto(tmp_path / "other.fits")
    ref = pq.read_table(survey / "refcat" / "refcat.parquet").to_pandas()
    ref = ref[ref[f"{band}_mag"].notna()]
    with open(tmp_path / "ref.csv", "w") as f:
        f.write("source_id,ra,dec,pmra,pmdec,parallax,ref_epoch,mag,mag_err\n")
        for _, r in ref.iterrows():
            f.write(f"{r.id},{r.ra:.10f},{r.dec:.10f},{r.pm_ra},{r.pm_dec},{r.parallax},{r.epoch},"
                    f"{r[f'{band}_mag']},{r[f'{band}_mag_err']}\n")
    out = aster("pipeline", "single-frame", tmp_path / "other.fits", "--output", tmp_path / "out",
                "--refcat", tmp_path / "ref.csv")
    print(out.stdout)
    with fits.open(tmp_path / "out" / "other.sources.fits") as h:
        src = h["SOURCE"].data
        t = h["SOURCE"].header
        units = {t[f"TTYPE{i}"]: t.get(f"TUNIT{i}") for i in range(1, t["TFIELDS"] + 1)}
    assert units["psfFlux"] == "nJy" and units["coord_ra"] == "deg"
    truth = pq.read_table(survey / "truth" / "sources" / (pvi.stem + ".parquet")).to_pandas()
    stars = truth[truth.isStar & truth.x.between(30, image.shape[1] - 30)
                  & truth.y.between(30, image.shape[0] - 30)]
    seps, ratios = [], []
    snr = src["psfFlux"] / src["psfFluxErr"]
    for _, t_ in stars.iterrows():
        d = np.hypot(src["x"] - t_.x, src["y"] - t_.y)
        i = int(np.argmin(d))
        if d[i] < 1.5 and not src["blended"][i] and snr[i] >= 100 and src["psfFlux"][i] < 2e6:
            seps.append(np.hypot((src["coord_ra"][i] - t_.ra) * np.cos(np.radians(t_.dec)),
                                 src["coord_dec"][i] - t_.dec) * 3.6e6)
            ratios.append(src["psfFlux"][i] / t_.flux)
    assert len(seps) >= 20, len(seps)
    rms = float(np.sqrt(np.mean(np.square(seps))))
    print(f"bright stars: astrometric RMS {rms:.1f} mas (n={len(seps)}), "
          f"flux ratio median {np.median(ratios):.4f}")
    assert rms <= 20, rms
    assert abs(np.median(ratios) - 1) < 0.01, np.median(ratios)
    # The processed image carries the refitted WCS, which astropy evaluates the same way.
    with fits.open(tmp_path / "out" / "other.calexp.fits") as h:
        w = WCS(h["IMAGE"].header)
    ra, dec = w.all_pix2world(src["x"], src["y"], 0)
    sep = np.hypot((ra - src["coord_ra"]) * np.cos(np.radians(dec)), dec - src["coord_dec"])
    assert sep.max() * 3.6e6 < 1.0


def test_a_rerun_redoes_nothing(survey):
    r = aster("--data-dir", survey, "pipeline", "run", PIPELINE)
    assert "0 CCD visits processed, 6 already done" in r.stdout, r.stdout


def test_bad_input_names_the_file_and_the_step(survey, tmp_path):
    # A corrupted raw: the checksum catches it before any pixel is believed.
    d = tmp_path / "corrupt"
    shutil.copytree(survey / "raw", d / "raw")
    victim = sorted((d / "raw").rglob("AS_C_*.fits"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    r = aster("--data-dir", d, "calib", "build", check=False)
    assert r.returncode != 0 and victim.name in r.stderr and "checksum" in r.stderr, r.stderr
    # A truncated raw.
    victim.write_bytes(bytes(data[: len(data) // 3]))
    r = aster("--data-dir", d, "calib", "build", check=False)
    assert r.returncode != 0 and victim.name in r.stderr, r.stderr

    # A missing calibration: the failing visit names the file and the step.
    d = tmp_path / "missing"
    shutil.copytree(survey / "raw", d / "raw")
    shutil.copytree(survey / "calib", d / "calib")
    shutil.copytree(survey / "refcat", d / "refcat")
    (d / "calib" / "flat" / "R11_r.fits").unlink()
    r = aster("--data-dir", d, "pipeline", "run", PIPELINE, "--where", "band=r", check=False)
    assert r.returncode != 0 and "isr: the flat calibration" in r.stderr and "R11_r.fits" in r.stderr, r.stderr
    assert not list((d / "runs" / "single-visit" / "pvi").glob("*.fits")), "nothing half-written"

    # A calibration of the wrong shape, from a smaller camera.
    small = tmp_path / "small"
    aster("--data-dir", small, "simulate", "--visits", 1, "--ccd-size", 256)
    aster("--data-dir", small, "calib", "build")
    shutil.copy(small / "calib" / "bias" / "R11.fits", d / "calib" / "bias" / "R11.fits")
    r = aster("--data-dir", d, "pipeline", "run", PIPELINE, "--where", "band=g", check=False)
    assert r.returncode != 0 and "bias: the bias calibration is 256 x 256" in r.stderr, r.stderr

    # An incomplete visit (its first snap missing) is not selected, and says why.
    d = tmp_path / "incomplete"
    for sub in ("raw", "calib", "refcat"):
        shutil.copytree(survey / sub, d / sub)
    for raw in sorted((d / "raw").rglob("*.fits")):
        h = fits.getheader(raw, 0)
        if h["IMGTYPE"] == "SCIENCE" and h["FILTER"] == "r" and h["SNAP"] == 0:
            raw.unlink()
            break
    else:
        raise AssertionError("no r-band first snap in the survey")
    r = aster("--data-dir", d, "pipeline", "run", PIPELINE, "--where", "band=r", check=False)
    assert r.returncode != 0 and "incomplete, its snaps [1] are not numbered from 0" in r.stderr, r.stderr
    assert not list((d / "runs" / "single-visit" / "pvi").glob("*.fits"))

    # A bad setting is refused before anything runs.
    r = aster("--data-dir", d, "pipeline", "run", PIPELINE, "--set", "characterize.psf_order=9", check=False)
    assert r.returncode != 0 and "psf_order 9 is over 4" in r.stderr, r.stderr
