import numpy as np
import pytest

from brain.methods.hardness import hardness


def test_entropy_matches_hand_computation():
    # p = [1/2, 1/4, 1/4]: H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2
    logits = np.log([[0.5, 0.25, 0.25]])
    np.testing.assert_allclose(hardness(logits), [1.5 * np.log(2)])


def test_uniform_is_hardest_and_one_hot_is_easiest():
    logits = np.array([[0.0, 0.0, 0.0, 0.0], [1000.0, 0.0, 0.0, 0.0], [3.0, 1.0, 0.0, -2.0]])
    h = hardness(logits)
    np.testing.assert_allclose(h[:2], [np.log(4), 0.0], atol=1e-12)  # 1000 neither overflows nor NaNs
    assert 0.0 < h[2] < np.log(4)


def test_normalized_divides_by_log_classes():
    logits = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, -1.0]])
    np.testing.assert_allclose(hardness(logits, normalize=True), hardness(logits) / np.log(3))
    assert hardness(logits, normalize=True)[0] == pytest.approx(1.0)


def test_shift_invariant_and_matches_softmax_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(50, 7))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(hardness(logits), -(p * np.log(p)).sum(axis=1), rtol=1e-10)
    np.testing.assert_allclose(hardness(logits + 123.0), hardness(logits), rtol=1e-10)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[0.0, 1.0], [0.5, 0.5], [np.nan, 1.0]]), "logits row 2 column 0 is nan"),
        (np.array([[0.0, np.inf], [0.0, 1.0]]), "logits row 0 column 1 is inf"),
        (np.array([[0.0, 1.0], [-np.inf, 1.0], [np.nan, 0.0]]), r"row 1 .*\(2 rows are not finite\)"),
        (np.array([0.1, 0.9]), r"2-D \(N, C\); got shape \(2,\)"),
        (np.zeros((3, 1)), "at least 2 classes"),
        (np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_bad_logits_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        hardness(bad)
