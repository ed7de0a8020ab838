"""Users' own tables (DMS-REQ-0290, 0122-0124, 0340): imported from uploads (CSV with a
metadata sidecar) and from VOSpace (VOTable, FITS, Parquet, written by astropy and pyarrow),
queried with pyvo and a bearer token, joined with the release, and visible in TAP and
TAP_SCHEMA to exactly those allowed."""
import io
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pyvo
import requests
from astropy.table import Table

from conftest import bearer

RUN = uuid.uuid4().hex[:6]


def tap_for(base_url, token):
    s = requests.Session()
    if token:
        s.headers.update(bearer(token))
    return pyvo.dal.TAPService(base_url + "/tap", session=s)


def visible_tables(base_url, token):
    rows = tap_for(base_url, token).search("SELECT table_name FROM TAP_SCHEMA.tables")
    return {r["table_name"] for r in rows}


@pytest.fixture(scope="module")
def objects(base_url):
    """Some release objects: positions and ids to build user tables from."""
    r = tap_for(base_url, None).search(
        "SELECT TOP 40 objectId, coord_ra, coord_dec FROM dp.Object ORDER BY objectId")
    return r.to_table()


def test_a_private_csv_table_joins_the_release_for_its_owner_only(base_url, tokens, objects):
    csv = "oid,RA_deg,Dec_deg,priority\n" + "".join(
        f"{o['objectId']},{float(o['coord_ra'])!r},{float(o['coord_dec'])!r},{i % 3}\n" for i, o in enumerate(objects))
    sidecar = ("description: carol's list\nra: RA_deg\ndec: Dec_deg\ncolumns:\n"
               "  priority: {ucd: meta.code, description: observing priority}\n"
               "  RA_deg: {unit: deg}\n  Dec_deg: {unit: deg}\n")
    name = f"list_{RUN}"
    r = requests.put(f"{base_url}/api/tables/{name}", headers=bearer(tokens["carol"]),
                     files={"table": ("list.csv", csv), "metadata": ("list.yaml", sidecar)})
    assert r.status_code == 201, r.text
    assert r.json()["rows"] == len(objects)
    table = f"user_carol.{name}"
    join = (f"SELECT t.oid, o.objectId, t.priority FROM {table} AS t "
            "JOIN dp.Object AS o ON t.oid = o.objectId ORDER BY t.oid")
    rows = tap_for(base_url, tokens["carol"]).search(join)
    assert len(rows) == len(objects)
    assert list(rows["oid"]) == list(objects["objectId"])
    # Partitioned by position: a cone on the table finds its own rows by the sky index.
    o = objects[0]
    cone = tap_for(base_url, tokens["carol"]).search(
        f"SELECT oid FROM {table} WHERE 1 = CONTAINS(POINT('ICRS', RA_deg, Dec_deg), "
        f"CIRCLE('ICRS', {o['coord_ra']}, {o['coord_dec']}, 0.0003))")
    assert o["objectId"] in list(cone["oid"])
    # The sidecar's metadata reaches TAP_SCHEMA.
    cols = tap_for(base_url, tokens["carol"]).search(
        f"SELECT column_name, unit, ucd FROM TAP_SCHEMA.columns WHERE table_name = '{table}'")
    meta = {c["column_name"]: (c["unit"], c["ucd"]) for c in cols}
    assert meta["RA_deg"][0] == "deg" and meta["priority"][1] == "meta.code"
    # Nobody else sees it, in queries or metadata, and the refusal is the one for a table
    # that does not exist.
    for who in ("bob", "alice", None):
        assert table not in visible_tables(base_url, tokens.get(who))
        with pytest.raises(pyvo.dal.DALQueryError) as e:
            tap_for(base_url, tokens.get(who)).search(f"SELECT * FROM {table}")
        assert "not found" in str(e.value)
    assert table not in requests.get(base_url + "/tap/tables").text
    assert table in requests.get(base_url + "/tap/tables", headers=bearer(tokens["carol"])).text
    # An administrator sees every table.
    assert table in visible_tables(base_url, tokens["admin"])


def test_tables_from_vospace_in_each_format(base_url, tokens, objects):
    carol = bearer(tokens["carol"])
    t = Table([objects["objectId"], objects["coord_ra"], objects["coord_dec"]],
              names=["id", "ra", "dec"])
    votable = io.BytesIO()
    t.write(votable, format="votable")
    fits = io.BytesIO()
    t.write(fits, format="fits")
    parquet = io.BytesIO()
    pq.write_table(pa.table({"id": np.asarray(objects["objectId"]), "ra": np.asarray(objects["coord_ra"]),
                             "dec": np.asarray(objects["coord_dec"])}), parquet)
    for fmt, data in (("vot", votable.getvalue()), ("fits", fits.getvalue()), ("parquet", parquet.getvalue())):
        path = f"carol/in-{RUN}.{fmt}"
        assert requests.put(f"{base_url}/vospace/data/{path}", headers=carol, data=data).status_code == 201
        name = f"from_{fmt}_{RUN}"
        r = requests.put(f"{base_url}/api/tables/{name}", headers=carol,
                         params={"source": f"vos://localhost!vospace/{path}"})
        assert r.status_code == 201, (fmt, r.text)
        rows = tap_for(base_url, tokens["carol"]).search(
            f"SELECT COUNT(*) AS n FROM user_carol.{name} AS u JOIN dp.Object AS o ON u.id = o.objectId")
        assert rows[0]["n"] == len(objects), fmt
    # A file someone else cannot read cannot be imported by them either.
    r = requests.put(f"{base_url}/api/tables/stolen_{RUN}", headers=bearer(tokens["bob"]),
                     params={"source": f"vos://localhost!vospace/carol/in-{RUN}.vot"})
    assert r.status_code == 403


def test_sharing_a_table_with_a_group(base_url, tokens, objects):
    carol = bearer(tokens["carol"])
    group = f"carol-team-{RUN}"
    assert requests.post(f"{base_url}/gms/groups", headers=carol, json={"name": group}).status_code == 201
    assert requests.put(f"{base_url}/gms/groups/{group}/members/bob", headers=carol).status_code == 204
    name = f"shared_{RUN}"
    csv = "id,ra,dec\n" + "".join(f"{o['objectId']},{float(o['coord_ra'])!r},{float(o['coord_dec'])!r}\n" for o in objects[:5])
    assert requests.put(f"{base_url}/api/tables/{name}", headers=carol, files={"table": ("s.csv", csv)}).status_code == 201
    table = f"user_carol.{name}"
    assert table not in visible_tables(base_url, tokens["bob"])
    r = requests.put(f"{base_url}/api/tables/{name}/access", headers=carol, json={"public": False, "groups": [group]})
    assert r.status_code == 200, r.text
    # Bob (in the group) now sees and queries it; alice (outside) still does not.
    assert table in visible_tables(base_url, tokens["bob"])
    assert len(tap_for(base_url, tokens["bob"]).search(f"SELECT * FROM {table}")) == 5
    assert table not in visible_tables(base_url, tokens["alice"])
    # Only the owner changes or drops it.
    assert requests.put(f"{base_url}/api/tables/{name}/access", headers=bearer(tokens["bob"]),
                        json={"public": True, "groups": []}).status_code == 404
    assert requests.delete(f"{base_url}/api/tables/{name}", headers=bearer(tokens["bob"])).status_code == 404
    assert requests.delete(f"{base_url}/api/tables/{name}", headers=carol).status_code == 204
    assert table not in visible_tables(base_url, tokens["carol"])


def test_bad_imports_are_refused_clearly(base_url, tokens):
    carol = bearer(tokens["carol"])
    cases = [
        ("bad name", "x.y", {"table": ("t.csv", "a,b\n1,2\n")}),
        ("not a table", f"junk_{RUN}", {"table": ("t.fits", b"SIMPLE  = garbage")}),
        ("sidecar names a missing column", f"side_{RUN}",
         {"table": ("t.csv", "a,b\n1,2\n"), "metadata": ("m.yaml", "columns:\n  nosuch: {unit: m}\n")}),
        ("text positions", f"textpos_{RUN}", {"table": ("t.csv", "id,ra,dec\n1,east,north\n")}),
        ("sidecar is not YAML", f"side2_{RUN}",
         {"table": ("t.csv", "a,b\n1,2\n"), "metadata": ("m.yaml", "columns: [unclosed\n")}),
        ("nothing sent", f"empty_{RUN}", None),
    ]
    for what, name, files in cases:
        r = requests.put(f"{base_url}/api/tables/{name}", headers=carol, files=files)
        assert r.status_code in (400, 404), (what, r.status_code, r.text)
        assert r.text.strip(), what
    # A read-only token and anonymous callers make no tables.
    r = requests.put(f"{base_url}/api/tables/ro_{RUN}", headers=bearer(tokens["alice_read"]),
                     files={"table": ("t.csv", "a\n1\n")})
    assert r.status_code == 403
    assert requests.put(f"{base_url}/api/tables/anon_{RUN}", files={"table": ("t.csv", "a\n1\n")}).status_code == 401


def test_the_demo_shares_alices_targets_with_her_group(base_url, tokens):
    assert "user_alice.targets" in visible_tables(base_url, tokens["bob"])
    assert "user_alice.targets" not in visible_tables(base_url, tokens["carol"])
    assert "user_alice.targets" not in visible_tables(base_url, None)
