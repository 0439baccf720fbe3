"""scikit-learn's digits as PNG files: the data the demo and the label-mistake walkthrough run on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(folder: Path, *, test_fraction: float = 0.2, seed: int = 0, limit: int | None = None) -> int:
    """Write the digits (the first ``limit`` of them) as 8×8 greyscale PNGs under folder/{train,test}/<label>/
    (kept if present)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(digits.images[:limit] * (255.0 / 16.0)).astype(np.uint8)
    is_test = np.zeros(len(pixels), bool)
    is_test[np.random.default_rng(seed).permutation(len(pixels))[: int(len(pixels) * test_fraction)]] = True
    for i, (img, target) in enumerate(zip(pixels, digits.target)):
        path = folder / ("test" if is_test[i] else "train") / str(target) / f"digit-{i:04d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(path)
    return len(pixels)
