"""The gallery's calibrated threshold on real photos: strangers (held-out CelebA identities) are rarely named."""
import numpy as np
import pytest

from facepipe.gallery import SqliteGallery
from facepipe.openset.policy import identify_threshold
from facepipe.pipeline.batch import ModelSpec, build_pipeline
from facepipe.runtime.image import read_image

N_ENROLLED, PER_PERSON, N_STRANGERS, PER_STRANGER = 40, 3, 60, 4


def _embed_largest(pipeline, path):
    image = read_image(path)
    faces = pipeline.detect(image)
    if not faces:
        return None
    return pipeline.embed(image, [max(faces, key=lambda f: f.area)])[0].embedding


def test_calibrated_threshold_names_at_most_2_percent_of_held_out_strangers(data_dir, tmp_path):
    folders = sorted(p for p in (data_dir / "celeba-dev").iterdir() if p.is_dir())
    folders = [f for f in folders if len(list(f.glob("*.jpg"))) >= PER_STRANGER + 1]
    if len(folders) < N_ENROLLED + N_STRANGERS:
        pytest.skip("celeba-dev has too few identities")
    pipeline = build_pipeline(ModelSpec(threads=1))
    rec = pipeline.recognizer
    with SqliteGallery(tmp_path / "g.db") as gallery:
        gallery.check_model(rec.fingerprint, rec.embedding_size, rec.metric)
        for folder in folders[:N_ENROLLED]:
            for path in sorted(folder.glob("*.jpg"))[:PER_PERSON]:
                emb = _embed_largest(pipeline, path)
                if emb is not None:
                    gallery.add_face(folder.name, str(path), path.name, [0, 0, 1, 1], 1.0, emb)
        threshold = identify_threshold(rec, gallery, None)
        assert threshold.source.startswith("gallery calibration")
        strangers = [_embed_largest(pipeline, p) for f in folders[N_ENROLLED:N_ENROLLED + N_STRANGERS]
                     for p in sorted(f.glob("*.jpg"))[:PER_STRANGER]]
        strangers = np.stack([e for e in strangers if e is not None])
        matches = gallery.match(strangers, threshold.value, 1)
    named = np.mean([m.identity is not None for m in matches])
    assert len(strangers) >= 200
    assert named <= 0.02, f"{named:.1%} of {len(strangers)} stranger photos named at {threshold.value:.3f}"
    # and the threshold is not so strict that it says nothing: the genuine side is in the benchmark
    assert threshold.value < 1.0
