"""/v1/clusters on a real server, and the page's "People to name" in headless Chromium: each cluster a grid of
faces with a name box; naming one enrolls it. A screenshot is written as a test artifact."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import httpx
import pytest

from facepipe.serve.process import ServerProcess, write_key_file


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    import facepipe

    root = tmp_path_factory.mktemp("clusters-serve")
    gallery = root / "gallery.db"
    with facepipe.open(gallery) as fp:  # the photos are clustered where they are; the service shows the result
        report = fp.cluster([data_dir / "people" / "person03", data_dir / "people" / "person05"])
        assert len(fp.clusters()) == 2, fp.clusters()
    key = write_key_file(root / "key")
    with ServerProcess(["--gallery", gallery, "--api-key-file", root / "key"], root / "server.log") as srv:
        srv.key = key
        srv.report = report
        yield srv


def _api(server, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {server.key}"}, timeout=60,
                         **kwargs)


def test_cluster_routes(server):
    listed = _api(server, "GET", "/v1/clusters").json()["clusters"]
    assert [c["faces"] for c in listed] == [5, 3]  # largest first
    first = listed[0]
    faces = _api(server, "GET", f"/v1/clusters/{first['cluster']}").json()["faces"]
    assert {f["face_id"] for f in faces} == set(first["face_ids"])
    image = _api(server, "GET", f"/v1/clusters/faces/{first['face_ids'][0]}.jpg")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content[:2] == b"\xff\xd8"

    assert _api(server, "GET", "/v1/clusters/999999").status_code == 404
    assert _api(server, "GET", "/v1/clusters/faces/999999.jpg").status_code == 404
    bad_name = _api(server, "POST", f"/v1/clusters/{first['cluster']}/name", json={"name": "\u202eevil"})
    assert bad_name.status_code == 422 and "error" in bad_name.json()
    assert _api(server, "POST", f"/v1/clusters/{first['cluster']}/split", json={"faces": []}).status_code == 422
    assert httpx.get(server.url + "/v1/clusters", timeout=10).status_code == 401  # the key guards them too


def test_page_names_a_cluster(server, tmp_path, tmp_path_factory):
    from test_serve_page import CHROMIUM, Browser

    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/install-system.sh)")
    browser = Browser(tmp_path / "profile")
    try:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=server.url + "/")
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('cluster-list')")
        browser.js(f"const k = document.getElementById('key'); k.value = {json.dumps(server.key)};"
                   "k.dispatchEvent(new Event('change')); true")
        browser.wait_for("document.querySelectorAll('#cluster-list .cluster').length === 2")
        # every face of the grids arrives as a real picture
        browser.wait_for("[...document.querySelectorAll('.cluster img')].every(i => i.complete && i.naturalWidth > 0)"
                         " && document.querySelectorAll('.cluster img').length === 8")
        shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        out = Path(os.environ.get("FACEPIPE_ARTIFACTS", tmp_path_factory.getbasetemp() / "artifacts"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "serve_clusters.png").write_bytes(base64.b64decode(shot))
        print(f"screenshot: {out / 'serve_clusters.png'}")

        browser.js("const card = document.querySelector('#cluster-list .cluster');"
                   "card.querySelector('input').value = 'Ana Ðorđević'; card.querySelector('button').click(); true")
        browser.wait_for("document.querySelectorAll('#cluster-list .cluster').length === 1")
        assert browser.wait_for("[...document.querySelectorAll('#persons li')].map(li => li.textContent).join('|')"
                                ) == "Ana Ðorđević (5 faces)"
        assert "is now Ana Ðorđević (5 faces enrolled)" in browser.js("document.getElementById('status').textContent")
    finally:
        browser.close()
    persons = _api(server, "GET", "/v1/persons").json()["persons"]
    assert [(p["name"], p["faces"]) for p in persons] == [("Ana Ðorđević", 5)]
