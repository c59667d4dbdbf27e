"""`facepipe serve` through a real uvicorn server (a `python -m facepipe.cli serve` child on a free
loopback port, one for the whole module), on real photos."""
import base64
import logging
from urllib.parse import quote

import httpx
import pytest
from test_image import _png_claiming

from facepipe.errors import ImageError
from facepipe.runtime.image import read_image
from facepipe.serve.process import ServerProcess, write_key_file

MAX_UPLOAD_MB = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("serve")
    key = write_key_file(root / "key")
    args = ["--gallery", root / "gallery.db", "--api-key-file", root / "key", "--max-upload-mb", MAX_UPLOAD_MB]
    with ServerProcess(args, root / "server.log") as srv:
        srv.key = key
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def people(data_dir):
    return data_dir / "people"


def upload(path, field="image"):
    return {field: (path.name, path.read_bytes(), "image/jpeg")}


def enroll(client, name, path):
    return client.post(f"/v1/persons/{name}/faces", files=upload(path))


def test_enroll_identify_list_remove_round_trip(client, people):
    for name, person in (("Zoë Ñúñez", "person01"), ("张伟", "person03")):
        for photo in ("img1.jpg", "img2.jpg") if person == "person01" else ("img13.jpg", "img14.jpg"):
            r = enroll(client, name, people / person / photo)
            assert r.status_code == 201, r.text
            assert r.json() == {"person": name, "image": photo, "status": "added"}
    again = enroll(client, "Zoë Ñúñez", people / "person01" / "img1.jpg")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"  # idempotent by content

    listed = client.get("/v1/persons").json()["persons"]
    assert {p["name"]: p["faces"] for p in listed} == {"Zoë Ñúñez": 2, "张伟": 2}

    # a photo of person01 that was not enrolled is named; the JSON is the identify --json object
    probe = people / "person01" / "img4.jpg"
    r = client.post("/v1/identify", files=upload(probe), params={"top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"image", "faces"} and body["image"] == "img4.jpg"
    face = max(body["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
    # dlib's ResNet is compared by Euclidean distance, so the contract adds "distance" beside "similarity"
    assert set(face) == {"box", "score", "landmarks", "identity", "similarity", "distance", "candidates",
                         "detector_pass"}  # detector_pass: optional, dlib's detector adds it
    assert face["identity"] == "Zoë Ñúñez"
    assert [c["identity"] for c in face["candidates"]] == ["Zoë Ñúñez", "张伟"]
    assert len(face["landmarks"]) == 5 and len(face["box"]) == 4

    # the same photo as base64 JSON gives the same faces
    as_json = client.post("/v1/identify", json={"image_base64": base64.b64encode(probe.read_bytes()).decode(),
                                                "name": "probe.jpg", "top_k": 2})
    assert as_json.status_code == 200
    assert as_json.json() == {"image": "probe.jpg", "faces": body["faces"]}

    r = client.delete("/v1/persons/张伟")
    assert r.status_code == 200 and r.json() == {"person": "张伟", "removed_faces": 2}
    assert [p["name"] for p in client.get("/v1/persons").json()["persons"]] == ["Zoë Ñúñez"]
    assert client.delete("/v1/persons/张伟").status_code == 404


def test_stranger_and_no_face(client, people, data_dir):
    enroll(client, "Zoë Ñúñez", people / "person01" / "img1.jpg")
    stranger = client.post("/v1/identify", files=upload(people / "person09" / "img26.jpg"), data={"threshold": "0.99"})
    assert stranger.status_code == 200
    assert stranger.json()["faces"] and all(f["identity"] is None for f in stranger.json()["faces"])
    dogs = client.post("/v1/identify", files=upload(data_dir / "dlib-faces" / "dogs.jpg"))
    assert dogs.status_code == 200 and dogs.json() == {"image": "dogs.jpg", "faces": []}
    no_face_enroll = enroll(client, "dogs", data_dir / "dlib-faces" / "dogs.jpg")
    assert no_face_enroll.status_code == 422 and "no face found" in no_face_enroll.json()["error"]


def test_detect_and_verify(client, people, data_dir):
    r = client.post("/v1/detect", files=upload(data_dir / "scenes" / "couple.jpg"))
    assert r.status_code == 200
    faces = r.json()["faces"]
    assert len(faces) == 2 and all(set(f) == {"box", "score", "landmarks", "detector_pass"} for f in faces)

    # the default threshold is dlib's at 1e-3 false accepts (true accepts ~0.88): most, not all, same-person pairs pass
    sames = [client.post("/v1/verify", files={**upload(people / "person02" / "img12.jpg", "image_a"),
                                              **upload(people / "person02" / other, "image_b")})
             for other in ("img3.jpg", "img53.jpg", "img54.jpg", "img55.jpg", "img56.jpg")]
    other = client.post("/v1/verify", files={**upload(people / "person02" / "img12.jpg", "image_a"),
                                             **upload(people / "person09" / "img26.jpg", "image_b")})
    assert all(r.status_code == 200 for r in sames + [other]), other.text
    assert sum(r.json()["same_person"] for r in sames) >= 3 and other.json()["same_person"] is False
    assert min(r.json()["similarity"] for r in sames) > other.json()["similarity"]
    assert set(sames[0].json()) == {"a", "b", "similarity", "threshold", "same_person"}


def test_gallery_info_and_health(server, client, people):
    enroll(client, "Zoë Ñúñez", people / "person01" / "img1.jpg")
    info = client.get("/v1/gallery").json()
    assert info["faces"] >= 1 and info["persons"] >= 1 and info["model"]
    assert "threshold" in str(info) and "source" in str(info)
    health = httpx.get(server.url + "/healthz")  # no key needed, and it says nothing about the gallery
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_missing_or_wrong_key_is_401_with_no_detail(server, people):
    for headers in ({}, {"Authorization": "Bearer wrong-key-of-some-length"}, {"Authorization": server.key},
                    {"Authorization": f"Basic {server.key}"}):
        for method, path in (("GET", "/v1/persons"), ("GET", "/v1/gallery"), ("DELETE", "/v1/persons/Zoë Ñúñez"),
                             ("POST", "/v1/identify")):
            r = httpx.request(method, server.url + path, headers=headers, files=upload(people / "person01" / "img1.jpg")
                              if method == "POST" else None)
            assert r.status_code == 401, (headers, path)
            assert r.json() == {"error": "unauthorized"}
            assert r.headers["www-authenticate"] == "Bearer"


def test_upload_over_the_limit_is_413_before_it_is_all_read(server, client):
    limit = MAX_UPLOAD_MB * 2**20
    r = client.post("/v1/identify", files={"image": ("big.jpg", b"\xff" * (limit + 1), "image/jpeg")})
    assert r.status_code == 413 and "upload limit" in r.json()["error"]

    # no Content-Length (chunked): counted while streaming, refused long before the 40 MB end
    sent = 0
    total_chunks = 640

    def chunks():
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        for _ in range(total_chunks):
            sent += 1
            yield b"\0" * 65536

    r = client.post("/v1/identify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert sent < total_chunks / 2, f"the server read {sent} of {total_chunks} chunks"
    assert client.get("/v1/persons").status_code == 200  # and it still serves


def _bad_files(tmp_path, good_photo):
    files = {}
    (tmp_path / "notes.jpg").write_text("this is not a photo")
    files["notes.jpg"] = tmp_path / "notes.jpg"
    (tmp_path / "cut.jpg").write_bytes(good_photo.read_bytes()[:4000])
    files["cut.jpg"] = tmp_path / "cut.jpg"
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    files["corrupt.jpg"] = tmp_path / "corrupt.jpg"
    _png_claiming(tmp_path / "bomb.png", 30000, 30000)
    files["bomb.png"] = tmp_path / "bomb.png"
    return files


def test_bad_images_get_the_cli_reason(client, people, tmp_path):
    for name, path in _bad_files(tmp_path, people / "person01" / "img1.jpg").items():
        with pytest.raises(ImageError) as cli_error:
            read_image(path)
        reason = str(cli_error.value).removeprefix(f"{path}: ")
        for route in ("/v1/identify", "/v1/detect", "/v1/persons/someone/faces"):
            r = client.post(route, files={"image": (name, path.read_bytes(), "image/jpeg")})
            assert r.status_code in (415, 422), (name, route, r.text)
            assert r.json() == {"error": f"{name}: {reason}"}, route
            assert "Traceback" not in r.text
    empty = client.post("/v1/identify", files={"image": ("empty.png", b"", "image/png")})
    assert empty.status_code == 422 and empty.json() == {"error": "empty.png: empty file"}
    assert "someone" not in [p["name"] for p in client.get("/v1/persons").json()["persons"]]


def test_malformed_requests_are_one_line_4xx(client, people):
    photo = people / "person01" / "img1.jpg"
    cases = [
        (client.post("/v1/identify", content=b"hi", headers={"content-type": "text/plain"}), 415),
        (client.post("/v1/identify", json={"image_base64": "not base64!"}), 422),
        (client.post("/v1/identify", json=["image"]), 422),
        (client.post("/v1/identify", content=b"{", headers={"content-type": "application/json"}), 422),
        (client.post("/v1/identify", files=upload(photo, "photo")), 422),
        (client.post("/v1/identify", files=upload(photo), params={"top_k": 0}), 422),
        (client.post("/v1/identify", files=upload(photo), data={"threshold": "nan"}), 422),
        (client.post("/v1/verify", files=upload(photo, "image_a")), 422),
    ]
    for r, status in cases:
        assert r.status_code == status, r.text
        assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]


def test_names_in_urls_are_validated(client, people):
    photo = people / "person01" / "img1.jpg"
    for bad in ("..", "a" * 101, "new\nline", "bidi\u202eoverride", "zero\u200bwidth", "back\\slash"):
        r = client.post(f"/v1/persons/{quote(bad, safe='')}/faces", files=upload(photo))
        assert r.status_code in (404, 422), (bad, r.status_code)  # 404: ".." resolves to another route
        assert client.delete(f"/v1/persons/{quote(bad, safe='')}").status_code in (404, 422)
    names = [p["name"] for p in client.get("/v1/persons").json()["persons"]]
    assert all(n.strip() == n and n.isprintable() for n in names)


def test_no_cors_unless_asked_and_docs(server, client):
    r = client.get("/v1/persons", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in r.headers
    pre = client.options("/v1/identify", headers={"Origin": "https://elsewhere.example",
                                                  "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/identify", "/v1/detect", "/v1/verify", "/v1/persons", "/v1/persons/{name}/faces",
            "/v1/persons/{name}", "/v1/gallery", "/healthz"} <= set(schema["paths"])
    assert httpx.get(server.url + "/docs").status_code == 200
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http" not in page.text.replace(server.url, "")  # nothing fetched from elsewhere


def test_unexpected_errors_are_500_with_an_id_in_the_log(caplog):
    """In-process: an engine that fails in a way nobody planned for (here: a bug, RuntimeError)."""
    from fastapi.testclient import TestClient

    from facepipe.serve.app import create_app
    from facepipe.serve.settings import ServeSettings

    class BrokenEngine:
        def persons(self):
            raise RuntimeError("secret internal detail /var/lib/gallery.db")

        def close(self):
            pass

    with caplog.at_level(logging.ERROR, logger="facepipe.serve"):
        with TestClient(create_app(ServeSettings(), engine=BrokenEngine()), raise_server_exceptions=False,
                        base_url="http://127.0.0.1") as c:
            r = c.get("/v1/persons")
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error", "error_id"} and "secret" not in r.text and "Traceback" not in r.text
    assert any(body["error_id"] in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_cors_only_for_the_origin_asked(tmp_path):
    """In-process, with a real engine that loads no model for these routes."""
    from fastapi.testclient import TestClient

    import facepipe
    from facepipe.serve.app import create_app
    from facepipe.serve.settings import ServeSettings

    engine = facepipe.open(gallery=tmp_path / "g.db")
    engine.gallery(create=True)
    app = create_app(ServeSettings(cors_origins=["http://kiosk.example"]), engine=engine)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        ok = c.options("/v1/persons", headers={"Origin": "http://kiosk.example",
                                               "Access-Control-Request-Method": "GET"})
        assert ok.headers["access-control-allow-origin"] == "http://kiosk.example"
        other = c.get("/v1/persons", headers={"Origin": "http://elsewhere.example"})
        assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
        assert c.get("/v1/persons").json()["persons"] == []
