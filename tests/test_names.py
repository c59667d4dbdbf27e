"""One person-name rule for every path: folder enroll, the Python API, the service, `gallery import`, Milvus."""
import hashlib
import shutil
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest

import facepipe
from facepipe.errors import GalleryError
from facepipe.gallery.npz import read_npz, write_npz
from facepipe.names import MAX_NAME_LENGTH, PersonNameError, person_name
from facepipe.serve.process import ServerProcess

GOOD = {"Anne (2)": "Anne (2)", "O'Brien": "O'Brien", "Zoë": "Zoë", "Zoe\u0308": "Zoë", "𝔄lice": "𝔄lice",
        "  王小明 ": "王小明", "a" * MAX_NAME_LENGTH: "a" * MAX_NAME_LENGTH}
# What a folder on Linux may be called, yet no path may store: control, bidi override, zero-width, too long, dots.
BAD_IN_FOLDERS = ["new\nline", "tab\there", "Alice\u202eecilA", "zero\u200bwidth", "a" * (MAX_NAME_LENGTH + 1)]
BAD = BAD_IN_FOLDERS + ["", "   ", "..", "slash/name", "back\\slash", "lone\ud800surrogate", "nul\x00"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("raw,stored", list(GOOD.items()))
def test_accepted_names_are_stored_nfc_and_trimmed(raw, stored):
    assert person_name(raw) == stored


@pytest.mark.parametrize("bad", BAD)
def test_refused_names_say_why_in_one_line(bad):
    with pytest.raises(PersonNameError) as err:
        person_name(bad)
    message = str(err.value)
    assert "\n" not in message and "\u202e" not in message and message.isprintable()


def test_engine_enroll_and_remove_refuse_the_same_names(tmp_path):
    with facepipe.open(gallery=tmp_path / "g.db") as fp:
        for bad in BAD:
            with pytest.raises(PersonNameError):
                fp.enroll(bad, b"not even read")  # the name is checked before any image or model
            with pytest.raises(PersonNameError):
                fp.remove(bad)


def _records(names):
    from facepipe.gallery.npz import GalleryRecords

    n = len(names)
    emb = np.eye(n, 8, dtype=np.float32)
    return GalleryRecords("m", 8, np.array(names, dtype=str), np.arange(n, dtype=np.int32), emb,
                          np.array([f"/p/{i}.jpg" for i in range(n)]), np.array([sha(str(i)) for i in range(n)]),
                          np.zeros((n, 4)), np.ones(n))


def test_import_refuses_the_same_names_and_normalises_good_ones(tmp_path):
    for i, bad in enumerate(b for b in BAD if "\ud800" not in b and "\x00" not in b):  # numpy's U dtype drops NULs
        write_npz(tmp_path / f"bad{i}.npz", _records(["ok", bad]))
        with pytest.raises(GalleryError, match="'names'"):
            read_npz(tmp_path / f"bad{i}.npz")
    write_npz(tmp_path / "good.npz", _records(["Zoe\u0308", "𝔄lice", "Anne (2)"]))
    assert read_npz(tmp_path / "good.npz").names.tolist() == ["Zoë", "𝔄lice", "Anne (2)"]
    write_npz(tmp_path / "twice.npz", _records(["Zoe\u0308", "Zoë"]))
    with pytest.raises(GalleryError, match="the same person name"):
        read_npz(tmp_path / "twice.npz")


def test_milvus_matches_and_removes_names_outside_the_bmp(tmp_path):
    pytest.importorskip("milvus_lite")
    from facepipe.gallery.milvus import MilvusGallery

    with MilvusGallery(f"milvus-lite://{tmp_path}/m.db") as g:
        g.check_model("m", 4)
        names = ["𝔄lice", 'Quote "q" \\ back', "O'Brien"]
        for i, name in enumerate(names):
            g.add_face(name, f"/p/{i}.jpg", sha(name), [0, 0, 1, 1], 0.9, np.eye(4, dtype=np.float32)[i])
        matches = g.match(np.eye(4, dtype=np.float32)[:3], threshold=0.5, top_k=1)
        assert [m.identity for m in matches] == names
        assert g.remove_person("𝔄lice") == 1
        assert g.remove_person('Quote "q" \\ back') == 1
        assert [p.name for p in g.persons()] == ["O'Brien"]


def test_folder_enroll_then_remove_over_http(tmp_path, data_dir):
    """`Anne (2)` and a decomposed `Zoë` enrolled from folders are removed over HTTP by a real server; the
    folders whose names break the rule are reported and skipped, and the service refuses those names too."""
    root = tmp_path / "people"
    photos = sorted((data_dir / "people" / "person01").glob("*.jpg"))[:2]
    for folder, photo in [("Anne (2)", photos[0]), ("Zoe\u0308", photos[1])] + \
            [(bad, photos[0]) for bad in BAD_IN_FOLDERS if "\n" not in bad]:
        (root / folder).mkdir(parents=True)
        shutil.copy(photo, root / folder / "a.jpg")
    with facepipe.open(gallery=tmp_path / "g.db") as fp:
        report = fp.enroll_folder(root)
        assert sorted(p.name for p in fp.persons()) == ["Anne (2)", "Zoë"]
    refused = [note for path, note in report.notes if "folder skipped" in note]
    assert len(refused) == len(BAD_IN_FOLDERS) - 1 and report.errors == len(refused)

    with ServerProcess(["--gallery", tmp_path / "g.db"], tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for bad in [b for b in BAD if b]:  # (an empty segment is another route)
                if "\ud800" in bad:
                    path = "lone%ED%A0%80surrogate"  # the UTF-8-ish bytes a client could send
                else:
                    path = quote(bad, safe="")
                r = client.delete(f"/v1/persons/{path}")
                assert r.status_code in (404, 405, 422), (bad, r.status_code, r.text)
                assert set(r.json()) == {"error"}
            assert client.delete(f"/v1/persons/{quote('Anne (2)', safe='')}").json() == \
                {"person": "Anne (2)", "removed_faces": 1}
            # the name as a macOS client would send it (decomposed) finds the NFC name stored
            assert client.delete(f"/v1/persons/{quote('Zoe' + chr(0x308), safe='')}").json()["removed_faces"] == 1
            assert client.get("/v1/persons").json()["persons"] == []
    assert "Traceback" not in Path(server.log_path).read_text()

