import numpy as np

from facepipe.runtime.align import ARCFACE_TEMPLATE, DLIB_TEMPLATE, align_face, reduce_68_to_5, similarity_transform


def _apply(matrix, points):
    return np.c_[points, np.ones(len(points))] @ matrix.T


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -30.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], rot, atol=1e-4)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-3)


def test_similarity_transform_never_reflects():
    src = np.array([[0, 0], [10, 0], [5, 5], [2, 10], [8, 10]], dtype=np.float64)
    mirrored = src * np.array([-1, 1])
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_reduce_68_to_5_takes_eye_centres_nose_tip_and_mouth_corners():
    pts = np.zeros((68, 2), dtype=np.float32)
    pts[36:42] = [10, 20]
    pts[42:48] = [30, 20]
    pts[30] = [20, 30]
    pts[48] = [12, 40]
    pts[54] = [28, 40]
    np.testing.assert_allclose(reduce_68_to_5(pts), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_dlib_template_is_a_plausible_face_inside_the_chip():
    points = DLIB_TEMPLATE.points
    assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # left before right
    assert points[0, 1] < points[2, 1] < points[3, 1]  # eyes above nose above mouth
    assert (points > 0).all() and (points < 150).all()


def test_align_face_moves_landmarks_onto_the_template():
    # A synthetic image with a bright dot at each landmark; after alignment the dots sit on the template.
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    landmarks = ARCFACE_TEMPLATE.points * 1.8 + np.array([150, 60], dtype=np.float32)
    for x, y in landmarks:
        image[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = 255
    chip = align_face(image, landmarks, ARCFACE_TEMPLATE)
    assert chip.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE.points:
        assert chip[int(round(y)), int(round(x))].max() > 100
