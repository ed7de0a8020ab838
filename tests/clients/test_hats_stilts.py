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


@pytest.mark.parametrize("table", ["dp/Object", "ap/DiaSource"])
def test_dataset_metadata_file_describes_every_data_file(data_dir, table):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq
    base = os.path.join(data_dir, "catalogs", table)
    meta = pq.read_metadata(os.path.join(base, "dataset", "_metadata"))
    cat = hats.read_hats(base)
    assert meta.num_rows == cat.catalog_info.total_rows
    files = {meta.row_group(i).column(0).file_path for i in range(meta.num_row_groups)}
    assert all(f.startswith("Norder=") for f in files), files
    # pyarrow plans the dataset from _metadata alone and reads the same rows.
    dataset = ds.parquet_dataset(os.path.join(base, "dataset", "_metadata"))
    assert dataset.count_rows() == meta.num_rows
    from hats.io.validation import is_valid_catalog
    assert is_valid_catalog(base, verbose=False)
    if len(files) == len(cat.get_healpix_pixels()):
        # hats' strict check assumes one file per pixel; appended tables (DiaSource,
        # one file per visit in a pixel's directory) are valid HATS all the same.
        assert is_valid_catalog(base, strict=True, verbose=False)


def test_taplint(tap_url):
    out = subprocess.run(
        ["stilts", "taplint", f"tapurl={tap_url}", "stages=-LOC", "maxrepeat=5"],
        capture_output=True, text=True, timeout=900,
    ).stdout
    # Errors, failures and warnings alike.
    reports = [l for l in out.splitlines() if l[:2] in ("E-", "F-", "W-")]
    assert not reports, "\n".join(reports)
    assert "Totals:" in out


def test_votlint_on_binary2_and_tabledata(tap_url, tmp_path):
    import requests
    for fmt in ["votable", "votable/td"]:
        r = requests.get(tap_url + "/sync", params={"LANG": "ADQL", "QUERY": "SELECT TOP 50 * FROM dp.Visit", "RESPONSEFORMAT": fmt}, timeout=60)
        path = tmp_path / "r.vot"
        path.write_bytes(r.content)
        res = subprocess.run(["stilts", "votlint", str(path)], capture_output=True, text=True, timeout=300)
        assert "ERROR" not in (res.stdout + res.stderr), res.stdout + res.stderr
