"""The first hour with the command line, as a user meets it (the real CLI in a subprocess, on real photos): an
unreadable folder is one line and exit 1 on every verb; `cluster --help` shows how to cluster; times and file names
print as typed; nothing is an empty table; the demo enrolls one face; the library's records print short."""
import os
import shutil
import subprocess
import sys

import pytest
from test_cli import run

SETPRIV = shutil.which("setpriv")


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def photo(data_dir):
    return data_dir / "lfw" / "AJ_Cook" / "AJ_Cook_0001.jpg"


@pytest.fixture(scope="module")
def gallery(photo, tmp_path_factory):
    """A gallery with one person, enrolled through the CLI."""
    root = tmp_path_factory.mktemp("one-person")
    (root / "people" / "AJ Cook").mkdir(parents=True)
    shutil.copy(photo, root / "people" / "AJ Cook")
    result = run("enroll", root / "people", "--gallery", root / "g.db")
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "g.db"


# -- 3. unreadable folders ---------------------------------------------------------------------------------------
@pytest.fixture
def locked(tmp_path, photo):
    """`locked/` (a photo inside, mode 000) and the command prefix of a user whom mode 000 stops.

    Root reads any folder (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so as root the CLI runs under util-linux's
    setpriv with those two capabilities dropped from its bounding set: still uid 0 and the owner of the files,
    but os.scandir on a mode-000 folder fails with EACCES, as it does for anyone else."""
    folder = tmp_path / "locked"
    folder.mkdir()
    shutil.copy(photo, folder)
    folder.chmod(0)
    prefix = []
    if os.geteuid() == 0:
        if SETPRIV is None:
            pytest.skip("as root, a folder can be made unreadable only without CAP_DAC_*: setpriv (util-linux) is "
                        "not installed")
        prefix = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = subprocess.run([*prefix, sys.executable, "-c", f"import os; os.listdir({str(folder)!r})"],
                           capture_output=True, text=True)
    if "PermissionError" not in probe.stderr:
        folder.chmod(0o755)
        pytest.skip(f"could not make a folder unreadable here: {probe.stderr.strip()[-200:] or 'listing worked'}")
    yield folder, prefix
    if folder.exists():
        folder.chmod(0o755)


def run_as(prefix, *args):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([*prefix, sys.executable, "-m", "facepipe.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def test_an_unreadable_folder_is_one_line_and_exit_1_on_every_verb(locked, gallery, tmp_path):
    folder, prefix = locked
    said = f"error: {folder}: folder not readable (Permission denied)"
    for args in (("identify", folder, "--gallery", gallery), ("detect", folder),
                 ("cluster", folder, "--gallery", tmp_path / "c.db"),
                 ("enroll", folder, "--gallery", tmp_path / "e.db"),
                 ("pseudo-label", folder, "--out", tmp_path / "labels.txt")):
        result = run_as(prefix, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert lines(result.stderr) == [said], (args, result.stderr)
        assert result.stdout.strip() == "", (args, result.stdout)


def test_an_unreadable_person_folder_is_that_persons_error(locked, photo, tmp_path):
    folder, prefix = locked
    people = tmp_path / "people"
    (people / "alice").mkdir(parents=True)
    shutil.copy(photo, people / "alice")
    folder.rename(people / "bob")  # still mode 000
    try:
        enrolled = run_as(prefix, "enroll", people, "--gallery", tmp_path / "g.db")
        prepared = run_as(prefix, "prepare", people, tmp_path / "prepared")
    finally:
        (people / "bob").chmod(0o755)
    result = enrolled
    assert result.returncode == 1, result.stdout + result.stderr
    assert "holds no images" not in result.stdout
    bob = [line for line in lines(result.stdout) if "people/bob" in line]
    assert len(bob) == 1 and "error: folder not readable (Permission denied)" in bob[0], result.stdout
    alice = next(line for line in lines(result.stdout) if "alice" in line)
    assert alice.split("│")[2].strip() == "1", result.stdout  # the readable person is enrolled all the same

    result = prepared
    assert result.returncode == 1
    assert lines(result.stderr) == [f"error: {people.resolve() / 'bob'}: folder not readable (Permission denied)"]


# -- 4. the CLI's small cuts -------------------------------------------------------------------------------------
def test_cluster_help_shows_how_to_cluster():
    for args in (("cluster", "--help"), ("cluster", "run", "--help"), ("cluster", "some/folder", "--help")):
        result = run(*args)
        assert result.returncode == 0, result.stderr
        for option in ("--json", "--save-dir", "--workers", "--gallery"):
            assert option in result.stdout, (args, option)
        assert "cluster run [OPTIONS] PATHS" in result.stdout.replace("{paths}", "PATHS"), (args, result.stdout)
        assert "cluster photos" not in result.stdout
    listed = run("cluster", "--help").stdout
    assert all(verb in listed for verb in ("run ", "list ", "show ", "name ", "merge ", "split "))


def test_times_and_file_names_print_as_typed(tmp_path):
    helped = run("identify", "--help").stdout
    assert "h:mm:ss" in helped and "Ⓜ" not in helped
    named = tmp_path / "12:m:30.jpg"  # ":m:" is rich's emoji code for Ⓜ
    result = run("identify", named)
    assert lines(result.stderr) == [f"error: {named}: no such file or folder"], result.stderr


@pytest.mark.parametrize("verb", ["identify", "detect"])
def test_nothing_to_show_is_the_error_line_alone(verb, gallery, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    for path, why in ((tmp_path / "missing.jpg", "no such file or folder"), (empty, "folder holds no images"),
                      (broken, "corrupt or truncated image")):
        result = run(verb, path, *(["--gallery", gallery] if verb == "identify" else []))
        assert result.returncode == 1
        assert result.stdout.strip() == "", (path, result.stdout)  # no table without a row
        assert len(lines(result.stderr)) == 1 and f"{path}: {why}" in result.stderr, result.stderr


def test_an_empty_cluster_list_says_what_to_run(gallery):
    result = run("cluster", "list", "--gallery", gallery)
    assert result.returncode == 0
    assert lines(result.stdout) == [f"No clusters in {gallery} yet: `facepipe cluster PATH...` groups the faces of "
                                    "photos or folders by person."]


def test_the_demo_enrolls_one_face(tmp_path):
    result = run("demo", "--workdir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "faces: enrolled the largest" not in result.stdout  # the mission patch on her suit is not a face
    assert "Eileen Collins" in result.stdout and "unknown" in result.stdout


def test_records_print_short(gallery, photo, tmp_path):
    import facepipe

    with facepipe.open(gallery) as fp:
        verification = fp.verify(photo, photo)
        faces = fp.identify(photo)
        (tmp_path / "people" / "AJ Cook").mkdir(parents=True)
        shutil.copy(photo, tmp_path / "people" / "AJ Cook")
        report = fp.enroll_folder(tmp_path / "people")
    shown = repr(verification)
    assert shown.startswith("Verification(similarity=") and "same_person=True" in shown
    assert "array" not in shown and len(shown) < 200, shown
    face = repr(faces[0])
    assert "identity='AJ Cook'" in face and "embedding=128-d" in face and "array" not in face and len(face) < 300
    assert repr(report) == ("EnrollReport(persons=1, added=0, unchanged=1, largest_of_many=0, no_face=0, errors=0, "
                            "notes=0)")
