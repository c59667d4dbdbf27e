"""`POST /v1/identify-video` on a real `facepipe serve` (a child process on a free loopback port): NDJSON track
records of an uploaded clip, with the same auth, upload limit and one-line errors as the other routes."""
import base64
import json

import httpx
import pytest
from conftest import enroll_from_other_photos, shown_faces

import facepipe
from facepipe.serve.process import ServerProcess, write_key_file
from facepipe.video.synthetic import Shot, make_clip

PHOTOS = {"person01": "img1.jpg", "person02": "img12.jpg"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("serve-video")
    people = data_dir / "people"
    with facepipe.open(gallery=root / "g.db") as fp:
        enroll_from_other_photos(fp, people, PHOTOS)
        shots = [Shot(2.0, image, box, name, face_width=0.45)
                 for name, (image, box) in shown_faces(fp, people, PHOTOS).items()]
    make_clip(root / "two.mp4", shots, (320, 240), 15.0)
    key = write_key_file(root / "key")
    args = ["--gallery", root / "g.db", "--api-key-file", root / "key", "--max-upload-mb", 1]
    with ServerProcess(args, root / "server.log") as server:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
            yield client, root


def test_a_clip_gives_one_ndjson_line_per_track(served):
    client, root = served
    clip = (root / "two.mp4").read_bytes()
    assert len(clip) < 2**20  # within the limit
    answer = client.post("/v1/identify-video?every=3", files={"video": ("door.mp4", clip, "video/mp4")})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    tracks = [json.loads(line) for line in answer.text.splitlines()]
    assert [(t["track"], t["identity"], t["video"]) for t in tracks] == [(1, "person01", "door.mp4"),
                                                                          (2, "person02", "door.mp4")]
    assert {"video", "track", "start", "end", "identity", "similarity", "candidates", "boxes"} <= set(tracks[0])
    as_json = client.post("/v1/identify-video", json={"video_base64": base64.b64encode(clip).decode(), "name": "x.mp4"})
    assert [json.loads(line)["identity"] for line in as_json.text.splitlines()] == ["person01", "person02"]


def test_same_auth_limits_and_errors_as_the_other_routes(served):
    client, root = served
    clip = (root / "two.mp4").read_bytes()
    anonymous = httpx.post(f"{client.base_url}/v1/identify-video", files={"video": ("a.mp4", clip)}, timeout=30)
    assert anonymous.status_code == 401
    too_big = client.post("/v1/identify-video", files={"video": ("big.mp4", b"\0" * (2**20 + 10))})
    assert too_big.status_code == 413 and "upload limit" in too_big.json()["error"]
    corrupt = client.post("/v1/identify-video", files={"video": ("broken.mp4", b"\x00\x00\x00\x18ftypmp42" * 500)})
    assert corrupt.status_code == 422
    error = corrupt.json()["error"]
    assert error.startswith("broken.mp4: ") and "\n" not in error and "facepipe-upload" not in error
    missing = client.post("/v1/identify-video", files={"image": ("a.mp4", clip)})
    assert missing.status_code == 422 and "video" in missing.json()["error"]
    assert client.post("/v1/identify-video?every=0", files={"video": ("a.mp4", clip)}).status_code == 422
