"""The default models on real photos (../shared/data): accuracy and multi-face scenes."""
import numpy as np
import pytest

from facepipe.openset.matching import pairwise_similarity
from facepipe.pipeline.batch import ModelSpec, build_pipeline
from facepipe.runtime.image import read_image


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(ModelSpec())


def test_leave_one_out_rank1_on_people(data_dir, pipeline):
    photos = sorted((data_dir / "people").glob("*/*.jpg"))
    assert len(photos) >= 50
    embeddings, labels = [], []
    for path in photos:
        image = read_image(path)
        faces = pipeline.detect(image)
        if not faces:
            embeddings.append(None)
        else:
            largest = max(faces, key=lambda f: f.area)
            embeddings.append(pipeline.embed(image, [largest])[0].embedding)
        labels.append(path.parent.name)
    found = [i for i, e in enumerate(embeddings) if e is not None]
    matrix = np.stack([embeddings[i] for i in found])
    sims = pairwise_similarity(matrix, matrix, pipeline.recognizer.metric)
    np.fill_diagonal(sims, -np.inf)
    # A photo with no detected face counts as a miss: rank-1 is over all photos.
    hits = sum(labels[found[j]] == labels[found[int(sims[j].argmax())]] for j in range(len(found)))
    rank1 = hits / len(photos)
    assert rank1 >= 0.95, f"rank-1 {rank1:.3f} over {len(photos)} photos"


def test_scenes_yield_several_faces(data_dir, pipeline):
    counts = {p.name: len(pipeline.detect(read_image(p))) for p in sorted((data_dir / "scenes").glob("*.jpg"))}
    assert counts["selfie-many-people.jpg"] >= 3, counts
    assert counts["couple.jpg"] >= 2, counts
    assert sum(counts.values()) >= 6, counts


def test_faces_have_landmarks_inside_their_boxes(data_dir, pipeline):
    image = read_image(data_dir / "scenes" / "couple.jpg")
    for face in pipeline.detect(image):
        x1, y1, x2, y2 = face.box
        lm = face.landmarks
        assert lm.shape == (5, 2)
        assert (lm[:, 0] > x1 - 0.1 * (x2 - x1)).all() and (lm[:, 0] < x2 + 0.1 * (x2 - x1)).all()
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0] and lm[0, 1] < lm[3, 1]


def test_same_person_is_more_similar_than_different_people(data_dir, pipeline):
    def embed(path):
        image = read_image(path)
        face = max(pipeline.detect(image), key=lambda f: f.area)
        return pipeline.embed(image, [face])[0].embedding
    a1, a2 = sorted((data_dir / "people" / "person01").glob("*.jpg"))[:2]
    b1 = sorted((data_dir / "people" / "person02").glob("*.jpg"))[0]

    def sim(x, y):
        return float(pairwise_similarity(x, y, pipeline.recognizer.metric)[0, 0])
    same, other = sim(embed(a1), embed(a2)), sim(embed(a1), embed(b1))
    assert same > pipeline.recognizer.threshold > other
