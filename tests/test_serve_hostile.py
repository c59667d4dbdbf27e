"""`facepipe serve` on loopback with no key (a developer's default), tried as an attacker would: through a real
uvicorn child on 127.0.0.1 with small limits (one engine turn, one waiting, a 2 s body deadline, 64 MB images)."""
import base64
import concurrent.futures
import socket
import time

import httpx
import numpy as np
import pytest
from memory import peak_rss, rss
from test_image_hostile import _ico_with_png, png_bytes

from facepipe.gallery import SqliteGallery
from facepipe.serve.process import ServerProcess

MB = 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("hostile")
    with SqliteGallery(root / "gallery.db") as g:  # 25 persons of another model: for paging and a 409 with a path in it
        g.check_model("another-model", 4)
        for i in range(25):
            g.add_face(f"person {i:02d}", f"/photos/{i}.jpg", f"{i:064x}", [0, 0, 1, 1], 0.9,
                       np.eye(4, dtype=np.float32)[i % 4])
    args = ["--gallery", root / "gallery.db", "--max-concurrent", 1, "--max-queue", 1, "--body-timeout", 2,
            "--max-image-mb", 64, "--max-upload-mb", 4]
    with ServerProcess(args, root / "server.log") as srv:
        srv.root = root
        yield srv
    assert "Traceback" not in srv.log()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def jpeg(data_dir, name="people/person01/img10.jpg") -> bytes:
    return (data_dir / name).read_bytes()


def test_host_allow_list_stops_dns_rebinding(server, client):
    assert client.get("/v1/persons", headers={"Host": "evil.example"}).status_code == 421
    assert client.get("/v1/persons", headers={"Host": f"evil.example:{server.port}"}).json()["error"].startswith(
        "host 'evil.example' is not served here")
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost"):
        assert client.get("/v1/persons", headers={"Host": host}).status_code == 200, host


def test_cross_site_writes_are_refused(server, client, data_dir):
    photo = {"image": ("a.jpg", jpeg(data_dir), "image/jpeg")}
    forged = [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"},
              {"Origin": f"http://127.0.0.1:{server.port + 1}"}]
    for headers in forged:
        r = client.post("/v1/persons/Mallory/faces", files=photo, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert client.delete("/v1/persons/person 00", headers=headers).status_code == 403
    same_origin = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    assert client.post("/v1/detect", files=photo, headers=same_origin).status_code == 200
    names = [p["name"] for p in client.get("/v1/persons").json()["persons"]]
    assert "Mallory" not in names and "person 00" in names


def test_memory_bombs_are_refused_with_bounded_server_memory(server, client):
    bombs = [("deep.png", png_bytes(8000, 8000, bit_depth=16)),  # 64 MP: gigabytes through float64 before
             ("icon.ico", _ico_with_png(png_bytes(6000, 6000, 8, 6))),
             ("claim.png", png_bytes(30000, 30000, rows=b"\x00"))]
    base = rss(server.proc.pid)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda nb: client.post("/v1/detect", files={"image": (nb[0], nb[1], "image/png")}),
                                bombs * 2))
    for r in answers:
        assert r.status_code in (422, 503), r.text
    messages = {r.json()["error"].split(":")[0] for r in answers if r.status_code == 422}
    assert messages <= {"deep.png", "icon.ico", "claim.png"} and messages
    growth = peak_rss(server.proc.pid) - base
    assert growth < 100 * MB, f"server peak grew {growth / MB:.0f} MB"


def test_malformed_json_and_numbers_are_4xx(client, data_dir):
    image = base64.b64encode(jpeg(data_dir)).decode()
    bodies = [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"image_base64": "' + image.encode() + b'", "top_k": 1e400}',
        b'{"image_base64": "' + image.encode() + b'", "top_k": ' + b"9" * 5000 + b"}",
        b'{"image_base64": "' + image.encode() + b'", "threshold": NaN}',
        b'{"image_base64": {"nested": ["x"]}}',
    ]
    for body in bodies:
        r = client.post("/v1/detect", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body[:40], r.status_code, r.text)
        assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]
    for query in ({"top_k": "1e400"}, {"top_k": "9" * 5000}, {"threshold": "1e400"}):
        r = client.post("/v1/identify", params=query, files={"image": ("a.jpg", jpeg(data_dir), "image/jpeg")})
        assert 400 <= r.status_code < 500, (query, r.text)
    # a lone surrogate in the name given to a JSON upload is answered, not a 500
    body = '{"image_base64": "%s", "name": "x\\ud800y.jpg"}' % image
    r = client.post("/v1/detect", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["image"] == "x?y.jpg"


def test_upload_names_are_bounded(client, data_dir):
    long_name = "a" * 900 + ".jpg"  # (python-multipart itself refuses much longer part headers)
    r = client.post("/v1/detect", files={"image": (long_name, jpeg(data_dir), "image/jpeg")})
    assert r.status_code == 200 and len(r.json()["image"]) <= 120 and r.json()["image"].endswith(".jpg")


def test_slow_body_gets_408_within_the_deadline(server):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n{\"image_base64\": \"")
        answer = b""
        while b"\r\n\r\n" not in answer:
            part = s.recv(4096)
            if not part:
                break
            answer += part
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - start < 6


def test_full_queue_sheds_with_retry_after_and_metrics_count_it(server, client, data_dir):
    photo = jpeg(data_dir, "people/person01/img4.jpg")  # 2500 x 1728: a second or more of dlib's detector

    def detect(_):
        return client.post("/v1/detect", files={"image": ("big.jpg", photo, "image/jpeg")})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(detect, range(6)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
    shed = [r for r in answers if r.status_code == 503]
    assert all(int(r.headers["retry-after"]) >= 1 and "busy" in r.json()["error"] for r in shed)
    metrics = client.get("/metrics").text
    shed_total = float(next(line.split()[-1] for line in metrics.splitlines()
                            if line.startswith("facepipe_shed_requests_total")))
    assert shed_total >= len(shed)
    assert 'facepipe_http_requests_total{method="POST",route="/v1/detect",status="503"}' in metrics
    assert "facepipe_http_request_seconds_bucket" in metrics and "facepipe_engine_queue_depth" in metrics
    assert "person 0" not in metrics  # routes are templates: no names in label values


def test_persons_are_paginated(client):
    first = client.get("/v1/persons", params={"limit": 10}).json()
    assert len(first["persons"]) == 10 and first["total"] == 25 and first["next_offset"] == 10
    last = client.get("/v1/persons", params={"limit": 10, "offset": 20}).json()
    assert [p["name"] for p in last["persons"]] == [f"person {i}" for i in range(20, 25)]
    assert last["next_offset"] is None
    assert client.get("/v1/persons", params={"limit": 10**6}).status_code == 422


def test_errors_reveal_no_server_paths(server, client, data_dir):
    r = client.post("/v1/identify", files={"image": ("a.jpg", jpeg(data_dir), "image/jpeg")})
    assert r.status_code == 409 and "another-model" in r.json()["error"]  # names the gallery by its file name
    assert str(server.root) not in r.text and "gallery.db" in r.text


def test_docs_are_served_from_the_package_under_a_csp(server, client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "http" not in docs.text  # nothing fetched from elsewhere
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/docs.js").status_code == 200
    for path in ("/", "/docs", "/v1/persons", "/healthz"):
        csp = client.get(path).headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp, path
    assert "script-src" not in client.get("/docs").headers["content-security-policy"]  # 'self' only, by default-src



def test_allowed_hosts_and_cors_origins_open_exactly_what_they_name(tmp_path):
    """In-process: --allowed-host adds a name, --cors-origin lets that origin's writes through, nothing more."""
    from fastapi.testclient import TestClient

    import facepipe
    from facepipe.serve.app import create_app
    from facepipe.serve.settings import ServeSettings

    engine = facepipe.open(gallery=tmp_path / "g.db")
    engine.gallery(create=True)
    app = create_app(ServeSettings(allowed_hosts=["faces.lan"], cors_origins=["https://kiosk.lan"]), engine=engine)
    with TestClient(app, base_url="http://faces.lan") as c:
        assert c.get("/v1/persons").status_code == 200
        assert c.get("/v1/persons", headers={"host": "faces.lan.evil.example"}).status_code == 421
        kiosk = c.delete("/v1/persons/nobody", headers={"origin": "https://kiosk.lan", "sec-fetch-site": "cross-site"})
        assert kiosk.status_code == 404  # through the guard, to the route
        other = c.delete("/v1/persons/nobody", headers={"origin": "https://other.lan"})
        assert other.status_code == 403
