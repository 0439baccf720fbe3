"""Near-duplicate quality on real photo tiles with altered copies (see tiles.py), default settings."""

import numpy as np

from brain.methods import duplicates
from brain.models import load_model
from tests.quality.tiles import ALTERATIONS, dataset


def test_default_finds_altered_copies_with_high_precision():
    tiles, source, kind = dataset()
    with load_model() as model:
        vectors = model.embed_all(list(tiles))
    found = duplicates.find_duplicate_images(list(tiles), vectors)
    groups = {}
    for kept, dups in found.items():
        for member in [kept, *(d for d, _ in dups)]:
            groups[member] = kept
    originals = np.flatnonzero(source < 0)
    # a pair (copy, its original) is found when both sit in one group
    per_kind = {}
    for how in ALTERATIONS:
        rows = np.flatnonzero(kind == how)
        hits = [r in groups and groups.get(originals[source[r]]) == groups[r] for r in rows]
        per_kind[how] = float(np.mean(hits))
    # precision: of the samples grouped, those whose group holds only one original and its copies
    origin = np.where(source < 0, np.arange(len(source)), originals[np.maximum(source, 0)])
    members: dict[int, list[int]] = {}
    for sample, kept in groups.items():
        members.setdefault(kept, []).append(sample)
    right = sum(len(m) for m in members.values() if len({origin[s] for s in m}) == 1)
    grouped = sum(len(m) for m in members.values())
    precision = right / grouped
    print(f"recall per alteration {per_kind}, precision {precision:.3f} over {grouped} grouped samples")
    assert all(r >= 0.95 for r in per_kind.values()), per_kind
    assert precision >= 0.95
