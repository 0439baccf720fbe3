import numpy as np
import pytest

from brain.methods.uniqueness import normalize, uniqueness, weighted_knn_distance


def test_weighted_distance_matches_hand_computation():
    d = np.array([[1.0, 2.0, 3.0, 9.0], [0.0, 0.0, 1.0, 2.0]])
    # 0.6*1 + 0.3*2 + 0.1*3 = 1.5 ; 0.6*0 + 0.3*0 + 0.1*1 = 0.1 (4th neighbour ignored)
    np.testing.assert_allclose(weighted_knn_distance(d), [1.5, 0.1])


def test_uniqueness_is_normalized_by_the_maximum():
    d = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0], [0.5, 1.0, 1.5]])
    u = uniqueness(d)
    np.testing.assert_allclose(u, [1.0, 0.1 / 1.5, 0.75 / 1.5])
    assert u.max() == 1.0 and u.min() >= 0.0


def test_exact_duplicate_has_zero_uniqueness():
    u = uniqueness(np.array([[0.0, 0.0, 0.0], [0.0, 0.2, 0.3], [0.4, 0.5, 0.6]]))
    assert u[0] == 0.0 and u.argmin() == 0


def test_all_identical_gives_zeros():
    np.testing.assert_array_equal(normalize(np.zeros(3), 0.0), np.zeros(3))


def test_custom_weights():
    np.testing.assert_allclose(weighted_knn_distance(np.array([[2.0, 4.0]]), weights=[0.5, 0.5]), [3.0])


@pytest.mark.parametrize("bad, match", [
    (np.array([1.0, 2.0, 3.0]), "must be"),
    (np.array([[1.0, 2.0]]), "weights need 3"),
    (np.array([[1.0, np.nan, 3.0]]), "rows \\[0\\]"),
    (np.array([[1.0, -2.0, 3.0]]), "finite and >= 0"),
])
def test_bad_distances_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        weighted_knn_distance(bad)
