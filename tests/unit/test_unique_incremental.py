"""Incremental unique subset (brain.methods.duplicates.extend_unique): the same picks as the greedy over all vectors."""

from __future__ import annotations

import numpy as np
import pytest

from brain import index as knn_index
from brain.methods import duplicates

N, D, PICKS = 6000, 32, 60


def hard_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    """Overlapping Gaussian modes with a decaying spectrum (axis variance ∝ 1/(i+1)), like real embeddings."""
    scales = 1 / np.sqrt(np.arange(1, D + 1))
    centres = rng.normal(size=(12, D)) * scales * 1.5
    return (centres[rng.integers(0, 12, count)] + rng.normal(size=(count, D)) * scales).astype(np.float32)


def core_copies(vectors: np.ndarray, metric: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """Slightly moved copies of samples in the data's core: nearer the first pick than any later radius, and
    not nearer the mean than it."""
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True) if metric == "cosine" else vectors
    picks = duplicates.find_unique(x, PICKS, metric="l2")
    to_first = np.linalg.norm(x - x[picks[0]], axis=1)
    last_radius = np.linalg.norm(x[picks[:-1]] - x[picks[-1]], axis=1).min()
    to_mean = np.linalg.norm(x - x.mean(axis=0), axis=1)
    core = np.flatnonzero((to_first < 0.5 * last_radius) & (to_mean > 1.05 * to_mean[picks[0]]))
    chosen = x[rng.choice(core, count)]
    return (chosen + 1e-3 * last_radius * rng.normal(size=chosen.shape) / np.sqrt(D)).astype(np.float32)


def updated(vectors: np.ndarray, new: np.ndarray, metric: str) -> tuple[np.ndarray, int]:
    """The picks over vectors + new by the incremental path, and the step it resumed from."""
    picks, state = duplicates.find_unique_state(vectors, PICKS, metric=metric)
    step, extended = duplicates.extend_unique(state, new, metric=metric)
    every = np.vstack([vectors, new])
    if step == PICKS + 1:
        # the new state describes all vectors: a second extension starts from it
        _, full_state = duplicates.find_unique_state(every, PICKS, metric=metric)
        assert extended.count == full_state.count
        np.testing.assert_allclose(extended.mean, full_state.mean, rtol=1e-9, atol=1e-12)
        # the bound holds for every sample but the K kept: at most the (K+1)-th smallest distance to the mean
        to_mean = np.sort(np.linalg.norm(knn_index.prepare(every, metric=metric) - extended.mean, axis=1))
        assert extended.beyond <= to_mean[duplicates.MEAN_CANDIDATES] + 1e-9
        return picks, step
    return duplicates.find_unique_state(every, PICKS, metric=metric, leading=picks[:step - 1])[0], step


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_points_inside_the_data_keep_every_pick(metric):
    rng = np.random.default_rng(7)
    x = hard_vectors(rng, N)
    inside = core_copies(x, metric, 60, rng)
    picks, step = updated(x, inside, metric)
    assert step == PICKS + 1
    np.testing.assert_array_equal(picks, duplicates.find_unique(np.vstack([x, inside]), PICKS, metric=metric))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_far_points_resume_at_the_first_changed_step(metric):
    rng = np.random.default_rng(8)
    x = hard_vectors(rng, N)
    # outside the data, in opposite pairs about the mean (which then stays where it was): the greedy reaches
    # them after some picks
    x_mean = x.mean(axis=0)
    out = hard_vectors(rng, 2) * 3.0
    far = np.vstack([x_mean + out, x_mean - out]).astype(np.float32)
    every = np.vstack([x, far])
    picks, step = updated(x, far, metric)
    full = duplicates.find_unique(every, PICKS, metric=metric)
    assert 2 <= step <= PICKS
    np.testing.assert_array_equal(picks, full)
    assert (full[step - 1:] >= N).any()  # a new point is among the picks from the resumed step on


def test_a_chain_of_extensions_stays_exact():
    rng = np.random.default_rng(9)
    x = hard_vectors(rng, N)
    picks, state = duplicates.find_unique_state(x, PICKS, metric="cosine")
    for _ in range(3):
        new = core_copies(x, "cosine", 30, rng)
        step, state = duplicates.extend_unique(state, new, metric="cosine")
        x = np.vstack([x, new])
        assert step == PICKS + 1
        np.testing.assert_array_equal(picks, duplicates.find_unique(x, PICKS, metric="cosine"))
    restored = duplicates.UniqueState.from_bytes(state.to_bytes())
    assert restored.count == len(x) and np.array_equal(restored.picks, state.picks)


def test_a_new_point_nearer_the_mean_means_a_full_run():
    rng = np.random.default_rng(10)
    x = hard_vectors(rng, N)
    _, state = duplicates.find_unique_state(x, PICKS, metric="l2")
    centre = x.mean(axis=0, keepdims=True)
    assert duplicates.extend_unique(state, centre, metric="l2") == (1, None)


def test_a_near_tie_falls_back():
    """A new point at the radius of a step (to float32 precision) is not trusted to lose the tie."""
    rng = np.random.default_rng(11)
    x = hard_vectors(rng, N)
    picks, state = duplicates.find_unique_state(x, PICKS, metric="l2")
    twin = x[picks[10]][None, :] * (1 + 1e-7)  # as far from s_1 … s_10 as s_11 (step 11) is
    step, _ = duplicates.extend_unique(state, twin, metric="l2")
    assert step <= 11


def test_new_vectors_of_another_dimension_are_refused():
    rng = np.random.default_rng(12)
    _, state = duplicates.find_unique_state(hard_vectors(rng, 100), 5, metric="l2")
    with pytest.raises(ValueError, match="dimensions"):
        duplicates.extend_unique(state, np.ones((2, D + 1), np.float32), metric="l2")


def test_pruning_never_changes_the_picks():
    """Dropping samples below a guessed last radius is exact, whether the guess holds or not."""
    rng = np.random.default_rng(13)
    x = hard_vectors(rng, duplicates.PRUNE_MIN_SAMPLES)
    unpruned, state = duplicates.find_unique_state(x, PICKS, metric="cosine", radius_guess=np.inf)
    for guess in (None, 0.9 * state.radius, 1.2 * state.radius, 100.0):  # the sampled guess, low, too high, absurd
        picks, pruned_state = duplicates.find_unique_state(x, PICKS, metric="cosine", radius_guess=guess)
        np.testing.assert_array_equal(picks, unpruned)
        assert pruned_state.radius == state.radius
        if guess is not None:  # continued after known first picks, as the job does after additions
            continued, _ = duplicates.find_unique_state(x, PICKS, metric="cosine", leading=unpruned[:30],
                                                        radius_guess=guess)
            np.testing.assert_array_equal(continued, unpruned)
