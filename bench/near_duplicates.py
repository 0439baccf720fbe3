"""Near-duplicate benchmark: the default image path vs pHash vs the previous thumbnail path, side by side.

Data (made here, no downloads; tests/quality/tiles.py): 96×96 tiles of every photo that ships
with scikit-image and scikit-learn, natural near-duplicates removed; altered copies of random
originals, ``COPIES`` per family: rotate ±1–5°, crop 2–10% per side, shift 2–8 px, rescale
0.5–2× (aspect up to 10%), JPEG 30–60, noise, blur, brightness, contrast, gamma, and combos of a
geometric and a photometric edit; hard negatives: the neighbouring tiles of each photo (the
originals themselves) and ``ZOOMS`` zoomed-out views of originals (the same scene at half scale).

Methods, each from the images to a neighbors_map:
- default: ``duplicates.find_duplicate_images`` (default model embeddings, embedding and
  blurred-thumbnail candidates, similarity-transform verification, greedy kept set);
- phash: imagehash's 64-bit pHash, pairs within Hamming distance ``PHASH_BITS`` (all pairs),
  greedy kept set;
- thumbnail: the previous path (``verifier="aligned"``: embedding candidates ≤ 0.5 verified by
  the aligned correlation ≥ 0.92, connected components).

Metrics: recall per alteration family (a copy counts when it shares its original's kept sample),
precision (of the reported duplicates, those kept with a copy of the same original), false pairs
involving a zoomed-out view, and seconds per 10k images (one process; embedding included).

Run: ``.venv/bin/python bench/near_duplicates.py [--flips]`` (a few minutes). The last line is
``RESULT ...``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from brain.methods import duplicates
from brain.models import load_model
from tests.quality.tiles import dataset, evaluate

COPIES = 60
ZOOMS = 60
PHASH_BITS = 8


def phash_duplicates(images: list[np.ndarray]) -> dict[int, list[tuple[int, float]]]:
    import imagehash
    from PIL import Image

    bits = np.stack([imagehash.phash(Image.fromarray(img)).hash.reshape(-1) for img in images]).astype(np.uint8)
    hamming = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    src, dst = np.nonzero(np.triu(hamming <= PHASH_BITS, 1))
    return duplicates.as_neighbors_map(*duplicates.group_duplicates(
        len(images), src, dst, hamming[src, dst].astype(np.float64), PHASH_BITS))


def main(flips: bool) -> None:
    started = time.perf_counter()
    images, source, kind = dataset(copies_per_alteration=COPIES, zoom_negatives=ZOOMS, flips=flips, seed=0)
    n = len(images)
    print(f"{n} images: {int((kind == '').sum())} originals, {int((kind == 'zoom').sum())} zoomed-out negatives, "
          f"{int((source >= 0).sum())} copies ({time.perf_counter() - started:.0f} s to build)")

    def embedded(**options):
        def run(imgs):
            with load_model() as model:
                vectors = model.embed_all(imgs)
            return duplicates.find_duplicate_images(imgs, vectors, **options)
        return run

    methods = {"default": embedded(flips=flips), "phash": phash_duplicates,
               "thumbnail": embedded(verifier="aligned", grouping="components")}
    results = {}
    for name, method in methods.items():
        t = time.perf_counter()
        found = method(images)
        seconds = time.perf_counter() - t
        recall, precision = evaluate(found, source, kind)
        zoom_rows = set(np.flatnonzero(kind == "zoom").tolist())
        zoom_false = sum(1 for k, dups in found.items() for d, _ in dups if k in zoom_rows or d in zoom_rows)
        results[name] = dict(recall=recall, precision=precision, zoom_false=zoom_false,
                             per_10k=seconds * 10_000 / n)
    families = list(results["default"]["recall"])
    print("\nrecall per alteration family (a copy found with its original)")
    print(f"{'family':>12} " + " ".join(f"{m:>10}" for m in methods))
    for fam in families:
        print(f"{fam:>12} " + " ".join(f"{results[m]['recall'][fam]:>10.3f}" for m in methods))
    print(f"{'overall':>12} " + " ".join(f"{np.mean(list(results[m]['recall'].values())):>10.3f}" for m in methods))
    print(f"{'precision':>12} " + " ".join(f"{results[m]['precision']:>10.3f}" for m in methods))
    print(f"{'zoom false':>12} " + " ".join(f"{results[m]['zoom_false']:>10d}" for m in methods))
    print(f"{'s per 10k':>12} " + " ".join(f"{results[m]['per_10k']:>10.1f}" for m in methods))
    d, p, th = results["default"], results["phash"], results["thumbnail"]

    def overall(r):
        return float(np.mean(list(r["recall"].values())))

    print(f"\n({time.perf_counter() - started:.0f} s in all; one process on a shared machine)")
    print(f"RESULT recall={overall(d):.3f} precision={d['precision']:.3f} "
          f"min_family_recall={min(d['recall'].values()):.3f} s_per_10k={d['per_10k']:.1f} "
          f"phash_recall={overall(p):.3f} phash_precision={p['precision']:.3f} "
          f"thumbnail_recall={overall(th):.3f} thumbnail_precision={th['precision']:.3f} "
          f"thumbnail_s_per_10k={th['per_10k']:.1f} time_ratio={d['per_10k'] / th['per_10k']:.2f}")


if __name__ == "__main__":
    with threadpool_limits(limits=1):
        main(flips="--flips" in sys.argv[1:])
