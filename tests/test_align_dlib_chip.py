"""facepipe's path (detector's 68 points -> dlib's chip -> the ONNX ResNet) gives dlib's own descriptors."""
import numpy as np
import pytest

from facepipe.pipeline.batch import ModelSpec, build_pipeline
from facepipe.runtime.align import DLIB_TEMPLATE, is_dlib_template
from facepipe.runtime.image import read_image


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(ModelSpec(threads=1))


def _dlib_shape(dlib, points68):
    parts = dlib.points([dlib.point(int(x), int(y)) for x, y in points68])
    (x1, y1), (x2, y2) = points68.min(0), points68.max(0)
    return dlib.full_object_detection(dlib.rectangle(int(x1), int(y1), int(x2), int(y2)), parts)


def test_descriptors_match_dlib_compute_face_descriptor_on_real_photos(data_dir, pipeline):
    dlib = pytest.importorskip("dlib")
    from facepipe.runtime.dlib_files import RESNET, dlib_model_path

    net = dlib.face_recognition_model_v1(str(dlib_model_path(RESNET)))
    photos = (sorted((data_dir / "celeba-dev").glob("*/*.jpg"))[::700]
              + sorted((data_dir / "people").glob("*/*.jpg"))[:2])
    cosines = []
    for path in photos:
        image = read_image(path)
        face = max(pipeline.detect(image), key=lambda f: f.area)
        assert face.landmarks68 is not None and face.landmarks68.shape == (68, 2)
        ours = pipeline.recognizer.embed_raw(pipeline.chips(image, [face]))[0]
        ref = np.asarray(net.compute_face_descriptor(image, _dlib_shape(dlib, face.landmarks68)))
        cosines.append(float(ours @ ref / np.linalg.norm(ours) / np.linalg.norm(ref)))
    assert len(cosines) >= 5
    assert min(cosines) >= 0.9999, cosines


def test_only_dlib_chip_recognizers_get_dlib_chips():
    assert is_dlib_template(DLIB_TEMPLATE)
    assert not is_dlib_template(DLIB_TEMPLATE.scaled_to(112, 112))
