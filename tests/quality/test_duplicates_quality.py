"""Near-duplicate quality on real photo tiles with altered copies and hard negatives (see tiles.py),
default settings of ``find_duplicate_images``. The full set and the comparison: bench/near_duplicates.py."""

import numpy as np

from brain.methods import duplicates
from brain.models import load_model
from tests.quality.tiles import ALTERATIONS, dataset, evaluate


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
