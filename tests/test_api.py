"""The Python API: the README's example, run exactly as it stands there, on real photos."""
import re
import shutil
import threading

import numpy as np
import pytest
from conftest import REPO

import facepipe


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def people(data_dir, tmp_path_factory):
    """Three enrolled people; person01's img7.jpg is held out as the query."""
    root = tmp_path_factory.mktemp("api")
    for name in ("person01", "person02", "person03"):
        shutil.copytree(data_dir / "people" / name, root / "people" / name, ignore=shutil.ignore_patterns("img7.jpg"))
    shutil.copy(data_dir / "people" / "person01" / "img7.jpg", root / "photo.jpg")
    return root


def test_readme_example_runs_as_written(people, monkeypatch, capsys):
    monkeypatch.chdir(people)
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("person01 ")  # the held-out photo of person01 is named
    assert re.match(r"threshold 0\.\d{3} \(.+\)", out[-1])
    assert (people / "my-gallery.db").is_file()


def test_inputs_of_every_kind_give_the_same_faces(people):
    from PIL import Image

    path = people / "photo.jpg"
    rgb = facepipe.load_image(path)
    with facepipe.open(gallery=people / "my-gallery.db") as fp:
        by_path = fp.detect(path)
        for other in (path.read_bytes(), Image.open(path), rgb, facepipe.from_bgr(rgb[:, :, ::-1])):
            faces = fp.detect(other)
            assert len(faces) == len(by_path) >= 1
            np.testing.assert_allclose(faces[0].box, by_path[0].box, atol=1.0)
        with pytest.raises(facepipe.ImageError, match="not an image"):
            fp.detect(b"this is not a photo")
        with pytest.raises(facepipe.ImageError, match="uint8"):
            fp.detect(rgb.astype(np.float32))


def test_threads_identify_while_one_enrolls(people, data_dir):
    queries = [people / "photo.jpg", sorted((data_dir / "people" / "person02").glob("*.jpg"))[0]] * 3
    newcomer = sorted((data_dir / "people" / "person04").glob("*.jpg"))
    with facepipe.open(gallery=people / "threads.db") as fp:
        fp.enroll_folder(people / "people")
        expected = [fp.identify(q)[0].identity for q in queries[:2]]
        answers, failures = [], []

        def identify(q):
            try:
                answers.append((q, fp.identify(q)[0].identity))
            except Exception as exc:  # noqa: BLE001 - the test reports any failure of any thread
                failures.append(exc)

        threads = [threading.Thread(target=identify, args=(q,)) for q in queries]
        writer = threading.Thread(target=lambda: fp.enroll("person04", newcomer[1:]))
        for t in threads + [writer]:
            t.start()
        for t in threads + [writer]:
            t.join(timeout=300)
        assert not failures
        assert sorted(a for _, a in answers) == sorted(expected * 3)
        assert "person04" in {p.name for p in fp.persons()}  # readers see the new person afterwards
        assert fp.identify(newcomer[0])[0].identity == "person04"
        assert fp.enroll("person04", newcomer[1]) == ["duplicate"]


def test_a_gallery_of_another_model_is_refused(people, tmp_path):
    from facepipe.gallery import SqliteGallery

    g = SqliteGallery(tmp_path / "other.db")
    g.check_model("someone-else:0123", 128)
    g.add_face("x", "x.jpg", "0" * 64, [0, 0, 1, 1], 1.0, np.ones(128, np.float32) / np.sqrt(128))
    g.close()
    with facepipe.open(gallery=tmp_path / "other.db") as fp:
        with pytest.raises(facepipe.ModelMismatchError, match="someone-else"):
            fp.identify(people / "photo.jpg")
        with pytest.raises(facepipe.ModelMismatchError):
            fp.enroll("y", people / "photo.jpg")
