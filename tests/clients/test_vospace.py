"""VOSpace 2.1 with CADC's `vos` client, unchanged (PyPI vos): make a container, upload a
1 GiB file, list, download it with an identical checksum, move, share with a group, delete;
then access control on nodes, bytes and transfers for every kind of caller, and paths that
try to leave a user's tree.

The client finds the service through its registry file (~/.config/cadc-registry), written
into a scratch HOME as the vos documentation describes."""
import hashlib
import http.client
import os
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path

import pytest
import requests

from conftest import bearer

VOS_BIN = Path(sys.executable).parent
NS = "http://www.ivoa.net/xml/VOSpace/v2.0"
# Names of this run, so the tests can run again against the same server.
RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def vos_home(tmp_path_factory, base_url):
    home = tmp_path_factory.mktemp("voshome")
    reg = home / ".config" / "cadc-registry"
    reg.mkdir(parents=True)
    (reg / "resource-caps").write_text(
        f"ivo://localhost/vospace = {base_url}/vospace/capabilities\n")
    # A date in the future keeps the client from replacing it with CADC's registry.
    os.utime(reg / "resource-caps", (4102444800, 4102444800))
    conf = home / ".config" / "vos"
    conf.mkdir(parents=True)
    (conf / "vos-config").write_text(
        "[vos]\n# List of VOSpace services known to vos, one entry per line:\n"
        "resourceID = ivo://cadc.nrc.ca/vault vos\n    ivo://localhost/vospace aster\n")
    return home


def vos(vos_home, token, *args, check=True):
    cmd = [str(VOS_BIN / args[0])] + (["--token", token] if token else []) + list(args[1:])
    r = subprocess.run(cmd, env={**os.environ, "HOME": str(vos_home)}, capture_output=True,
                       text=True, timeout=600)
    if check:
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r


def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_vos_client_round_trip_of_a_gigabyte(vos_home, tokens, tmp_path):
    alice = tokens["alice"]
    vos(vos_home, alice, "vmkdir", f"aster:/alice/run1-{RUN}")
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(1024):
            f.write(os.urandom(1 << 20))
    vos(vos_home, alice, "vcp", str(big), f"aster:/alice/run1-{RUN}/big.bin")
    listing = vos(vos_home, alice, "vls", "-l", f"aster:/alice/run1-{RUN}").stdout
    assert "big.bin" in listing and str(1 << 30) in listing
    out = tmp_path / "back.bin"
    vos(vos_home, alice, "vcp", f"aster:/alice/run1-{RUN}/big.bin", str(out))
    assert md5(out) == md5(big)
    out.unlink()
    big.unlink()
    vos(vos_home, alice, "vmv", f"aster:/alice/run1-{RUN}/big.bin", f"aster:/alice/run1-{RUN}/moved.bin")
    listing = vos(vos_home, alice, "vls", f"aster:/alice/run1-{RUN}").stdout.split()
    assert listing == ["moved.bin"]
    vos(vos_home, alice, "vrm", f"aster:/alice/run1-{RUN}/moved.bin")
    assert vos(vos_home, alice, "vls", f"aster:/alice/run1-{RUN}").stdout.strip() == ""
    vos(vos_home, alice, "vrm", "-R", f"aster:/alice/run1-{RUN}")
    assert f"run1-{RUN}" not in vos(vos_home, alice, "vls", "aster:/alice").stdout


def test_group_read_permission(vos_home, tokens, tmp_path):
    alice = tokens["alice"]
    vos(vos_home, alice, "vmkdir", f"aster:/alice/shared-{RUN}")
    notes = tmp_path / "notes.txt"
    notes.write_text("for the collaboration\n")
    vos(vos_home, alice, "vcp", str(notes), f"aster:/alice/shared-{RUN}/notes.txt")
    # carol (outside the group) and bob (inside) before and after the group may read.
    assert vos(vos_home, tokens["bob"], "vcp", f"aster:/alice/shared-{RUN}/notes.txt", str(tmp_path / "b0"), check=False).returncode != 0
    vos(vos_home, alice, "vchmod", "g+r", f"aster:/alice/shared-{RUN}/notes.txt", "demo-collab")
    assert "demo-collab" in vos(vos_home, alice, "vls", "-l", f"aster:/alice/shared-{RUN}").stdout
    vos(vos_home, tokens["bob"], "vcp", f"aster:/alice/shared-{RUN}/notes.txt", str(tmp_path / "b1"))
    assert (tmp_path / "b1").read_text() == "for the collaboration\n"
    r = vos(vos_home, tokens["carol"], "vcp", f"aster:/alice/shared-{RUN}/notes.txt", str(tmp_path / "c1"), check=False)
    assert r.returncode != 0 and "PermissionDenied" in r.stderr
    assert not (tmp_path / "c1").exists()
    # Reading is not writing: bob cannot replace alice's file.
    other = tmp_path / "other.txt"
    other.write_text("bob's version\n")
    r = vos(vos_home, tokens["bob"], "vcp", str(other), f"aster:/alice/shared-{RUN}/notes.txt", check=False)
    assert r.returncode != 0
    vos(vos_home, alice, "vcp", f"aster:/alice/shared-{RUN}/notes.txt", str(tmp_path / "a1"))
    assert (tmp_path / "a1").read_text() == "for the collaboration\n"
    # Whatever is put in a shared folder later is shared too.
    vos(vos_home, alice, "vchmod", "g+r", f"aster:/alice/shared-{RUN}", "demo-collab")
    vos(vos_home, alice, "vcp", str(notes), f"aster:/alice/shared-{RUN}/later.txt")
    vos(vos_home, tokens["bob"], "vcp", f"aster:/alice/shared-{RUN}/later.txt", str(tmp_path / "b2"))
    assert "later.txt" in vos(vos_home, tokens["bob"], "vls", f"aster:/alice/shared-{RUN}").stdout


def node_url(base_url, path):
    return f"{base_url}/vospace/nodes/{path}"


def test_access_matrix_of_nodes_bytes_and_transfers(base_url, tokens):
    """Each caller against alice's private file, her group-readable file, her container and
    a transfer of her file: allowed exactly where the rules say."""
    a = bearer(tokens["alice"])
    requests.put(node_url(base_url, f"alice/m-{RUN}"), headers={**a, "Content-Type": "text/xml"},
                 data=f'<vos:node xmlns:vos="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="vos:ContainerNode"/>')
    for name, body in (("private.txt", b"mine"), ("group.txt", b"ours")):
        r = requests.put(f"{base_url}/vospace/data/alice/m-{RUN}/{name}", headers=a, data=body)
        assert r.status_code in (200, 201), r.text
    prop = f'<vos:node xmlns:vos="{NS}" uri="vos://localhost!vospace/alice/m-{RUN}/group.txt"><vos:properties><vos:property uri="ivo://ivoa.net/vospace/core#groupread">ivo://cadc.nrc.ca/gms?demo-collab</vos:property></vos:properties></vos:node>'
    assert requests.post(node_url(base_url, f"alice/m-{RUN}/group.txt"), headers=a, data=prop).status_code == 200

    denied = {"anonymous": 401, "expired": 401, "tampered": 401, "bob": 403, "carol": 403}
    reads = {
        f"alice/m-{RUN}/private.txt": {"alice", "admin"},
        f"alice/m-{RUN}/group.txt": {"alice", "admin", "bob"},
        f"alice/m-{RUN}": {"alice", "admin"},
    }
    for path, allowed in reads.items():
        for who in ["anonymous", "alice", "bob", "carol", "admin", "expired", "tampered"]:
            h = bearer(tokens.get(who))
            r = requests.get(node_url(base_url, path), headers=h)
            want = 200 if who in allowed else denied[who]
            assert r.status_code == want, (path, who, r.status_code, r.text)
            if want != 200:
                assert "ours" not in r.text and "mine" not in r.text and "length" not in r.text
            if not path.endswith(".txt"):
                continue
            data = requests.get(f"{base_url}/vospace/data/{path}", headers=h)
            assert data.status_code == want, (path, who)
            if want == 200:
                assert data.content in (b"mine", b"ours")
            # Negotiating a download is refused alike.
            sync = requests.get(f"{base_url}/vospace/synctrans", headers=h, params={
                "TARGET": f"vos://localhost!vospace/{path}", "DIRECTION": "pullFromVoSpace",
                "PROTOCOL": "ivo://ivoa.net/vospace/core#httpget"})
            assert sync.status_code == want, (path, who, sync.text)
    # Listings show each caller only what they may read.
    home = requests.get(node_url(base_url, ""), headers=bearer(tokens["bob"])).text
    assert "vos://localhost!vospace/alice" not in home
    mine = requests.get(node_url(base_url, f"alice/m-{RUN}"), headers=a).text
    assert "private.txt" in mine and "group.txt" in mine
    # Writes: only alice (and the administrator); a read-only token of alice's cannot.
    for who, want in [("bob", 403), ("carol", 403), ("anonymous", 401), ("alice_read", 403)]:
        r = requests.put(f"{base_url}/vospace/data/alice/m-{RUN}/private.txt", headers=bearer(tokens.get(who)), data=b"x")
        assert r.status_code == want, (who, r.status_code)
        r = requests.delete(node_url(base_url, f"alice/m-{RUN}/group.txt"), headers=bearer(tokens.get(who)))
        assert r.status_code == want, (who, r.status_code)
    # A move by someone else ends in ERROR, and the file stays.
    move = f'<vos:transfer xmlns:vos="{NS}"><vos:target>vos://localhost!vospace/alice/m-{RUN}/private.txt</vos:target><vos:direction>vos://localhost!vospace/carol/stolen.txt</vos:direction><vos:keepBytes>false</vos:keepBytes></vos:transfer>'
    r = requests.post(f"{base_url}/vospace/transfers?PHASE=RUN", headers={**bearer(tokens["carol"]), "Content-Type": "text/xml"}, data=move, allow_redirects=False)
    assert r.status_code == 303
    job = r.headers["location"]
    # UWS WAIT blocks while the job is queued or running.
    requests.get(job, headers=bearer(tokens["carol"]), params={"WAIT": 30})
    assert requests.get(job + "/phase", headers=bearer(tokens["carol"])).text == "ERROR"
    assert requests.get(job + "/error", headers=bearer(tokens["carol"])).text.startswith("PermissionDenied")
    assert requests.get(job, headers=bearer(tokens["bob"])).status_code == 403
    assert requests.get(f"{base_url}/vospace/data/alice/m-{RUN}/private.txt", headers=a).content == b"mine"


def raw_get(base_url, raw_path, token):
    """A request with the path exactly as given (no client-side normalising of dot segments)."""
    u = urllib.parse.urlparse(base_url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.putrequest("GET", raw_path, skip_accept_encoding=True)
    c.putheader("Authorization", f"Bearer {token}")
    c.endheaders()
    r = c.getresponse()
    body = r.read().decode("utf-8", "replace")
    c.close()
    return r.status, body


def test_paths_cannot_leave_a_users_tree(base_url, tokens):
    carol = tokens["carol"]
    # carol has a file of her own to aim at.
    requests.put(f"{base_url}/vospace/data/carol/own.txt", headers=bearer(carol), data=b"c")
    for path in [
        f"/vospace/nodes/carol/../alice/m-{RUN}/private.txt",
        f"/vospace/data/carol/../alice/m-{RUN}/private.txt",
        f"/vospace/data/carol/%2e%2e/alice/m-{RUN}/private.txt",
        f"/vospace/data/carol%2F..%2Falice%2Fm-{RUN}%2Fprivate.txt",
        f"/vospace/data/alice%2Fm-{RUN}%2Fprivate.txt",
        "/vospace/nodes/carol/own.txt%00.txt",
        "/vospace/nodes/carol/" + "x" * 300,
        "/vospace/nodes/carol/a%5C..%5Calice",
    ]:
        status, body = raw_get(base_url, path, carol)
        assert status == 400, (path, status, body)
        assert "mine" not in body
    for uri in [f"vos://localhost!vospace/carol/../alice/m-{RUN}/private.txt",
                f"vos://localhost!vospace/carol/%2e%2e/alice/m-{RUN}/private.txt"]:
        r = requests.get(f"{base_url}/vospace/synctrans", headers=bearer(carol), params={
            "TARGET": uri, "DIRECTION": "pullFromVoSpace"})
        assert r.status_code == 400, (uri, r.status_code)
    # Nothing can be made beside the homes, or in someone else's.
    xml = f'<vos:node xmlns:vos="{NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="vos:ContainerNode"/>'
    assert requests.put(node_url(base_url, "topdir"), headers={**bearer(carol), "Content-Type": "text/xml"}, data=xml).status_code == 400
    assert requests.put(node_url(base_url, "alice/carols"), headers={**bearer(carol), "Content-Type": "text/xml"}, data=xml).status_code == 403


def test_downloads_resume_and_uploads_are_checked(base_url, tokens):
    a = bearer(tokens["alice"])
    body = bytes(range(256)) * 100
    r = requests.put(f"{base_url}/vospace/data/alice/range.bin", headers=a, data=body)
    assert r.headers["Digest"] == "md5=" + __import__("base64").b64encode(hashlib.md5(body).digest()).decode()
    r = requests.get(f"{base_url}/vospace/data/alice/range.bin", headers={**a, "Range": "bytes=1000-"})
    assert r.status_code == 206 and r.content == body[1000:]
    assert r.headers["Content-Range"] == f"bytes 1000-{len(body) - 1}/{len(body)}"
    # An upload whose digest does not match is refused and changes nothing.
    r = requests.put(f"{base_url}/vospace/data/alice/range.bin", headers={**a, "Digest": "md5=AAAAAAAAAAAAAAAAAAAAAA=="}, data=b"corrupt")
    assert r.status_code == 412
    assert requests.get(f"{base_url}/vospace/data/alice/range.bin", headers=a).content == body


def test_soda_cuts_private_images_for_those_who_may_read_them(base_url, tokens):
    """A user's own image in VOSpace (here a cutout of an archive image) is cut by SODA with
    ID=vos://..., under the node's access rules."""
    import io

    import pyvo
    from astropy.io import fits

    row = pyvo.dal.TAPService(base_url + "/tap").search(
        "SELECT TOP 1 obs_publisher_did, s_ra, s_dec FROM ivoa.ObsCore "
        "WHERE calib_level = 2 AND dataproduct_type = 'image' ORDER BY obs_publisher_did")[0]
    ra, dec = float(row["s_ra"]), float(row["s_dec"])
    cut = requests.get(f"{base_url}/soda/sync", params={
        "ID": row["obs_publisher_did"], "CIRCLE": f"{ra} {dec} 0.01"}, timeout=120)
    assert cut.status_code == 200, cut.text
    a = bearer(tokens["alice"])
    path = f"alice/image-{RUN}.fits"
    assert requests.put(f"{base_url}/vospace/data/{path}", headers=a, data=cut.content).status_code == 201
    params = {"ID": f"vos://localhost!vospace/{path}", "CIRCLE": f"{ra} {dec} 0.003"}
    expected = {"anonymous": 401, "alice": 200, "bob": 403, "carol": 403, "admin": 200,
                "expired": 401, "tampered": 401}
    for who, want in expected.items():
        r = requests.get(f"{base_url}/soda/sync", params=params, headers=bearer(tokens.get(who)), timeout=120)
        assert r.status_code == want, (who, r.status_code, r.text[:200])
        if want == 200:
            with fits.open(io.BytesIO(r.content)) as small, fits.open(io.BytesIO(cut.content)) as big:
                assert small["IMAGE"].data.size < big["IMAGE"].data.size
        else:
            assert not r.content.startswith(b"SIMPLE")
    # Shared with alice's group, bob may cut it too.
    prop = (f'<vos:node xmlns:vos="{NS}" uri="vos://localhost!vospace/{path}"><vos:properties>'
            '<vos:property uri="ivo://ivoa.net/vospace/core#groupread">demo-collab</vos:property>'
            '</vos:properties></vos:node>')
    assert requests.post(node_url(base_url, path), headers=a, data=prop).status_code == 200
    r = requests.get(f"{base_url}/soda/sync", params=params, headers=bearer(tokens["bob"]), timeout=120)
    assert r.status_code == 200 and r.content.startswith(b"SIMPLE")


def test_views_properties_and_short_listings(base_url, tokens):
    import xml.etree.ElementTree as ET
    v = ET.fromstring(requests.get(f"{base_url}/vospace/views").content)
    assert v.find(f"{{{NS}}}accepts/{{{NS}}}view").get("uri") == "ivo://ivoa.net/vospace/core#defaultview"
    p = ET.fromstring(requests.get(f"{base_url}/vospace/properties").content)
    accepts = {e.get("uri") for e in p.find(f"{{{NS}}}accepts")}
    assert "ivo://ivoa.net/vospace/core#groupread" in accepts
    assert "ivo://ivoa.net/vospace/core#length" not in accepts
    caps = requests.get(f"{base_url}/vospace/capabilities").text
    assert "VOSpace/v2.0#views" in caps and "VOSpace/v2.0#properties" in caps
    a = bearer(tokens["alice"])
    requests.put(f"{base_url}/vospace/data/alice/short-{RUN}.txt", headers=a, data=b"x")
    full = ET.fromstring(requests.get(node_url(base_url, "alice"), headers=a).content)
    short = ET.fromstring(requests.get(node_url(base_url, "alice"), headers=a, params={"detail": "min"}).content)
    kids = lambda doc: doc.find(f"{{{NS}}}nodes").findall(f"{{{NS}}}node")
    assert [k.get("uri") for k in kids(full)] == [k.get("uri") for k in kids(short)]
    assert all(k.find(f"{{{NS}}}properties") is None for k in kids(short))
    assert all(k.find(f"{{{NS}}}properties") is not None for k in kids(full))
    assert requests.get(node_url(base_url, "alice"), headers=a, params={"detail": "all"}).status_code == 400
