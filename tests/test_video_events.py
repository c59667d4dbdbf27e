"""Track events out: a real HTTP receiver and a real mosquitto broker on loopback get the expected events in
order; a slow or failing receiver never blocks the video (drops and failures are counted)."""
import base64
import time

import cv2
import numpy as np
import pytest
from servers_testing import Subscriber, http_receiver, mosquitto

import facepipe
from facepipe.errors import FacepipeError
from facepipe.types import Candidate
from facepipe.video import VideoOptions, identify_video
from facepipe.video.events import MqttSink, WebhookSink, close_sinks, event_json, open_sinks, parse_mqtt_url, publish
from facepipe.video.identify import TrackRecord
from facepipe.video.synthetic import Shot, make_clip

PHOTOS = {"person01": "img1.jpg", "person02": "img12.jpg"}


def _record(track: int, identity: str | None = "ann") -> TrackRecord:
    return TrackRecord("cam", track, 0.0, 1.5, identity, 0.9, [Candidate("ann", 0.9)], [(0.0, 1, 2, 3, 4)], 1)


def test_event_json_is_the_track_record_plus_type_and_crop():
    crop = np.zeros((40, 30, 3), np.uint8)
    crop[:, :, 0] = 255
    out = event_json("named", _record(3), crop)
    assert out["event"] == "named" and out["track"] == 3 and out["identity"] == "ann"
    assert set(out) == {"event", "crop_jpeg_base64", *_record(3).to_json()}
    jpeg = cv2.imdecode(np.frombuffer(base64.b64decode(out["crop_jpeg_base64"]), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == (40, 30, 3) and jpeg[:, :, 2].mean() > 200  # red came back red (BGR on disk)
    assert "crop_jpeg_base64" not in event_json("ended", _record(3))
    with pytest.raises(ValueError):
        event_json("exploded", _record(3))


def test_bad_sink_urls_are_one_line():
    for url in ("ftp://x/y", "localhost:8000"):
        with pytest.raises(FacepipeError, match="--webhook"):
            WebhookSink(url)
    assert parse_mqtt_url("mqtt://broker:1884/home/faces") == ("broker", 1884, "home/faces")
    assert parse_mqtt_url("mqtt://broker/faces") == ("broker", 1883, "faces")
    for url in ("mqtt://broker", "mqtt://broker/a/#", "http://broker/t", "mqtt://broker:99999/t"):
        with pytest.raises(FacepipeError, match="--mqtt"):
            parse_mqtt_url(url)


def test_slow_receiver_never_blocks_and_drops_are_counted():
    with http_receiver(delay=0.2) as receiver:
        sink = WebhookSink(receiver.url, queue_size=4, timeout=5)
        start = time.perf_counter()
        accepted = [sink.put("ended", _record(k), None) for k in range(40)]
        assert time.perf_counter() - start < 0.5  # 40 events, each answered in 0.2 s: put never waited
        sink.close(drain_seconds=5)
        got = receiver.wait_for(sum(accepted))
    assert sink.stats.dropped == accepted.count(False) >= 30
    assert sink.stats.sent == len(got) == accepted.count(True)
    tracks = [b["track"] for b in got]
    assert tracks == sorted(tracks)  # in order


def test_failing_receiver_is_retried_with_backoff_then_counted():
    with http_receiver(fail_first=2) as receiver:
        sink = WebhookSink(receiver.url, retries=3, backoff=0.05)
        sink.put("started", _record(1), None)
        assert [b["track"] for b in receiver.wait_for(1)] == [1]  # the third try got through
        sink.close()
        assert sink.stats.sent == 1 and sink.stats.failed == 0 and receiver.requests == 3
    with http_receiver(fail_first=100) as receiver:
        sink = WebhookSink(receiver.url, retries=2, backoff=0.05)
        sink.put("started", _record(1), None)
        sink.close(drain_seconds=3)
        assert sink.stats.failed == 1 and sink.stats.sent == 0 and receiver.requests == 3


# -- a real clip, real models: the same events through both sinks ---------------------------------------
@pytest.fixture(scope="module")
def engine(data_dir, tmp_path_factory):
    people = data_dir / "people"
    fp = facepipe.open(gallery=tmp_path_factory.mktemp("events-gallery") / "g.db")
    for name, shown in PHOTOS.items():
        photos = [p for p in sorted((people / name).glob("*.jpg")) if p.name != shown][:3]
        assert "added" in fp.enroll(name, photos)
    yield fp
    fp.close()


def test_webhook_and_mqtt_receive_the_events_of_a_clip_in_order(engine, data_dir, tmp_path):
    shots = []
    for name, photo in PHOTOS.items():
        image = facepipe.load_image(data_dir / "people" / name / photo)
        shots.append(Shot(2.0, image, max(engine.detect(image), key=lambda f: f.area).box, name, face_width=0.45))
    clip = tmp_path / "two.mp4"
    make_clip(clip, shots, (320, 240), 15.0)
    topic = "facepipe/test"
    with mosquitto(tmp_path) as port, http_receiver() as receiver:
        subscriber = Subscriber(port, topic)
        sinks = open_sinks(webhook=receiver.url, mqtt=f"mqtt://127.0.0.1:{port}/{topic}")
        assert isinstance(sinks[1], MqttSink)
        try:
            with identify_video(engine, clip, VideoOptions(every=3), event_crops=True,
                                on_event=lambda kind, record, crop: publish(sinks, kind, record, crop)) as run:
                records = list(run)
        finally:
            close_sinks(sinks)
        expected = [("started", 1, None), ("named", 1, "person01"), ("ended", 1, "person01"),
                    ("started", 2, None), ("named", 2, "person02"), ("ended", 2, "person02")]
        for got in (receiver.wait_for(6), subscriber.wait_for(6)):
            assert [(e["event"], e["track"], e["identity"]) for e in got] == expected
            assert all(e["crop_jpeg_base64"] for e in got)
            assert got[2] == {**records[0].to_json(), "event": "ended", "crop_jpeg_base64": got[2]["crop_jpeg_base64"]}
        subscriber.close()
    assert all(s.stats.dropped == 0 and s.stats.failed == 0 and s.stats.sent == 6 for s in sinks)


def test_identify_sends_the_events_of_its_videos(engine, data_dir, tmp_path):
    """`facepipe identify clip.mp4 --webhook URL` (its video path, in process): the same events."""
    import io

    from rich.console import Console

    from facepipe.cli.video import identify_videos

    image = facepipe.load_image(data_dir / "people" / "person01" / PHOTOS["person01"])
    clip = tmp_path / "one.mp4"
    make_clip(clip, [Shot(1.5, image, max(engine.detect(image), key=lambda f: f.area).box, "person01",
                          face_width=0.45)], (320, 240), 15.0)
    with http_receiver() as receiver:
        sinks = open_sinks(webhook=receiver.url)
        errors = identify_videos(engine, [str(clip)], VideoOptions(every=3), True, None, Console(file=io.StringIO()),
                                 Console(file=io.StringIO()), sinks)
        close_sinks(sinks)
        assert errors == []
        assert [(e["event"], e["identity"]) for e in receiver.wait_for(3)] == \
            [("started", None), ("named", "person01"), ("ended", "person01")]
