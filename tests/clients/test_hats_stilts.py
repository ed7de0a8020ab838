"""The catalog store opened by the HATS readers, and the TAP service checked by STILTS."""
import os
import subprocess

import hats
import pytest


@pytest.mark.parametrize("table", ["dp/Object", "dp/Source", "ap/DiaSource"])
def test_hats_reads_demo_tables(data_dir, table):
    cat = hats.read_hats(os.path.join(data_dir, "catalogs", table))
    assert cat.catalog_info.total_rows > 0
    assert len(cat.get_healpix_pixels()) >= 1
    assert "_healpix_29" in cat.schema.names


def test_lsdb_opens_object_catalog(data_dir):
    import lsdb
    cat = lsdb.open_catalog(os.path.join(data_dir, "catalogs", "dp", "Object"))
    df = cat.head(5)
    assert len(df) == 5
    assert "coord_ra" in df.columns


# TAP 1.1 asks services that accept uploads to fetch them from URLs as well; Aster accepts
# inline uploads only, on purpose (no fetching of arbitrary URLs), so that report is expected.
EXPECTED = {"E-CAP-MUPM-1"}


def test_taplint(tap_url):
    out = subprocess.run(
        ["stilts", "taplint", f"tapurl={tap_url}", "stages=-OBS -LOC", "maxrepeat=5"],
        capture_output=True, text=True, timeout=900,
    ).stdout
    errors = [l for l in out.splitlines() if l.startswith("E-") or l.startswith("F-")]
    unexpected = [e for e in errors if e.split()[0] not in EXPECTED]
    assert not unexpected, "\n".join(unexpected)
    assert "Totals:" in out


def test_votlint_on_binary2_and_tabledata(tap_url, tmp_path):
    import requests
    for fmt in ["votable", "votable/td"]:
        r = requests.get(tap_url + "/sync", params={"LANG": "ADQL", "QUERY": "SELECT TOP 50 * FROM dp.Visit", "RESPONSEFORMAT": fmt}, timeout=60)
        path = tmp_path / "r.vot"
        path.write_bytes(r.content)
        res = subprocess.run(["stilts", "votlint", str(path)], capture_output=True, text=True, timeout=300)
        assert "ERROR" not in (res.stdout + res.stderr), res.stdout + res.stderr
