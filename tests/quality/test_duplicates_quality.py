"""Near-duplicate quality on real photo tiles with altered copies and hard negatives (see tiles.py),
default settings of ``find_duplicate_images``. The full set and the comparison: bench/near_duplicates.py."""

import numpy as np

from brain.methods import duplicates
from brain.models import load_model
from tests.quality.tiles import ALTERATIONS, dataset


def evaluate(found: dict, source: np.ndarray, kind: np.ndarray) -> tuple[dict[str, float], float]:
    """Recall per alteration (the copy and its original share a kept sample) and precision (of the
    reported duplicates, those whose kept sample is a copy of the same original or the original)."""
    kept_of = {d: k for k, dups in found.items() for d, _ in dups}
    originals = np.flatnonzero(kind == "")
    origin = np.where(source < 0, np.arange(len(source)), originals[np.maximum(source, 0)])
    recall = {}
    for how in sorted(set(kind[source >= 0].tolist())):
        rows = np.flatnonzero(kind == how)
        recall[how] = float(np.mean([kept_of.get(r, r) == kept_of.get(originals[source[r]], originals[source[r]])
                                     for r in rows]))
    right = [origin[d] == origin[k] for d, k in kept_of.items()]
    return recall, float(np.mean(right)) if right else 1.0


def test_default_finds_geometric_and_photometric_copies_with_high_precision():
    images, source, kind = dataset(copies_per_alteration=10, zoom_negatives=20, max_originals=200, seed=3)
    with load_model() as model:
        vectors = model.embed_all(images)
    recall, precision = evaluate(duplicates.find_duplicate_images(images, vectors), source, kind)
    print(f"recall per alteration {recall}, precision {precision:.3f}")
    assert set(recall) == set(ALTERATIONS)
    assert np.mean(list(recall.values())) >= 0.95 and min(recall.values()) >= 0.8, recall
    assert precision >= 0.95


def test_flips_are_found_only_when_asked():
    images, source, kind = dataset(copies_per_alteration=6, zoom_negatives=0, max_originals=60, flips=True, seed=4)
    with load_model() as model:
        vectors = model.embed_all(images)
    with_flips, _ = evaluate(duplicates.find_duplicate_images(images, vectors, flips=True), source, kind)
    without, _ = evaluate(duplicates.find_duplicate_images(images, vectors), source, kind)
    assert with_flips["flip"] >= 0.8 and without["flip"] <= 0.2, (with_flips, without)
