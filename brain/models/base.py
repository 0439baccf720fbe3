"""The model interface every embedding or prediction model implements.

A model is a context manager: ``load()`` on enter (weights, sessions), ``close()``
on exit. Work is split in two so engines can run them apart:

* ``preprocess(images)``: list of H×W×3 uint8 arrays → one float32 batch array
  (CPU, needs no weights; Ray runs it in plain tasks);
* ``embed(batch)`` / ``predict(batch)``: the batch → vectors / logits (the actor
  that keeps the model loaded, on a GPU where there is one).

``embed_all`` and ``predict_all`` chain both over a list of images in batches.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np


class Model(ABC):
    name: str = "model"
    embedding_dim: int | None = None
    has_embeddings: bool = True
    has_logits: bool = False
    classes: list[str] | None = None

    def __init__(self, *, batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def load(self) -> None:
        """Load weights; a no-op for models without any."""

    def close(self) -> None:
        """Release what ``load`` took."""

    def __enter__(self) -> "Model":
        self.load()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """H×W×3 uint8 images → the model's input batch (float32); an empty list gives an empty batch."""

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """A preprocessed batch → float32 vectors [N, embedding_dim]."""
        raise NotImplementedError(f"model {self.name!r} does not compute embeddings")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """A preprocessed batch → float32 logits [N, len(classes)]."""
        raise NotImplementedError(f"model {self.name!r} does not predict classes")

    def embed_all(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of a list of H×W×3 uint8 images, in batches: [N, embedding_dim]."""
        return self._batched(images, self.embed)

    def predict_all(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Logits of a list of H×W×3 uint8 images, in batches: [N, len(classes)]."""
        return self._batched(images, self.predict)

    def _batched(self, images: Sequence[np.ndarray], step) -> np.ndarray:
        _check_images(images)
        out = [step(self.preprocess(images[i:i + self.batch_size]))
               for i in range(0, len(images), self.batch_size)]
        if not out:
            raise ValueError("no images given: the list is empty")
        return np.concatenate(out).astype(np.float32, copy=False)


def _check_images(images: Sequence[np.ndarray]) -> None:
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            shape = getattr(img, "shape", None)
            dtype = getattr(img, "dtype", type(img).__name__)
            raise ValueError(f"image {i} must be an H×W×3 uint8 array, got shape {shape} dtype {dtype}")
