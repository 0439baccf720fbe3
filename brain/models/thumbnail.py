"""The built-in model: a normalized colour thumbnail. No weights, nothing to download.

Each image is resized (area averaging) to ``size``×``size`` RGB, scaled to [0, 1],
centred by its own mean and scaled to unit L2 norm:

    v = (t − mean(t)) / ‖t − mean(t)‖₂,   t = thumbnail pixels, D = 3·size²

Near-identical images give near-identical vectors and brightness offsets cancel,
so it is a fair default for near-duplicate and uniqueness work on small images
and the only model guaranteed to work offline. A flat image (all pixels equal)
maps to the zero vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from brain.models.base import Model, _check_images


class ThumbnailModel(Model):
    name = "thumbnail"

    def __init__(self, *, size: int = 16, batch_size: int = 256):
        super().__init__(batch_size=batch_size)
        if size < 2:
            raise ValueError(f"thumbnail size must be >= 2, got {size}")
        self.size = size
        self.embedding_dim = 3 * size * size

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        _check_images(images)
        out = np.empty((len(images), self.embedding_dim), dtype=np.float32)
        for i, img in enumerate(images):
            thumb = Image.fromarray(img).resize((self.size, self.size), Image.Resampling.BOX)
            out[i] = np.asarray(thumb, dtype=np.float32).reshape(-1) / 255.0
        return out

    def embed(self, batch: np.ndarray) -> np.ndarray:
        centred = batch - batch.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(centred, axis=1, keepdims=True)
        return np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0)
