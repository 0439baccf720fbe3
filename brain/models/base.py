"""The model interface every embedding or prediction model implements.

A model is a context manager: ``load()`` on enter (weights, sessions), ``close()``
on exit. Work is split in two so engines can run them apart:

* ``preprocess(images)``: list of H×W×3 uint8 arrays → one batch array
  (CPU, needs no weights; Ray runs it in plain tasks). Torch models return the
  images resized to their input size as uint8 N×H×W×3 (a quarter of float32's
  bytes through Ray's object store); normalisation happens in the model step;
* ``embed(batch)`` / ``predict(batch)``: the batch → vectors / :class:`Predictions`
  (the actor that keeps the model loaded, on a GPU where there is one).

``embed_all`` and ``predict_all`` chain both over a list of images in batches.

Predictions of a classifier come from its logits ``z`` (``logits(batch)``):
``p = softmax(z)``, ``label = classes[argmax p]``, ``confidence = max p``.
A detector's predictions are per-image lists of :class:`Detection` (boxes
``[x, y, w, h]`` relative to the image's width and height, in [0, 1]); its
``label`` / ``confidence`` are those of its most confident detection (None / 0
when it found nothing).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TASKS = ("classification", "detection", "embeddings")


@dataclass(frozen=True)
class Detection:
    label: str
    bbox: tuple[float, float, float, float]  # x, y, w, h relative to the image, in [0, 1]
    confidence: float


@dataclass
class Predictions:
    """Predictions for N images: labels, confidences and (classifiers) logits or (detectors) detections."""

    labels: list[str | None]
    confidence: np.ndarray  # float32 [N]
    logits: np.ndarray | None = None  # float32 [N, len(classes)]
    detections: list[list[Detection]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_logits(cls, logits: np.ndarray, classes: Sequence[str]) -> "Predictions":
        logits = np.asarray(logits, dtype=np.float32)
        if logits.ndim != 2 or logits.shape[1] != len(classes):
            raise ValueError(f"logits must be [N, {len(classes)}] (one column per class), got {logits.shape}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return cls([classes[i] for i in best], probs[np.arange(len(best)), best].astype(np.float32), logits)

    @classmethod
    def from_detections(cls, detections: list[list[Detection]]) -> "Predictions":
        top = [max(dets, key=lambda d: d.confidence) if dets else None for dets in detections]
        return cls([d.label if d else None for d in top],
                   np.array([d.confidence if d else 0.0 for d in top], np.float32), None, detections)

    def thresholded(self, confidence_thresh: float) -> "Predictions":
        """A classifier's predictions with the labels less confident than ``confidence_thresh`` set to None
        (FiftyOne's ``confidence_thresh``); confidences and logits are kept."""
        labels = [label if c >= confidence_thresh else None for label, c in zip(self.labels, self.confidence)]
        return Predictions(labels, self.confidence, self.logits, self.detections)

    @classmethod
    def concat(cls, parts: Sequence["Predictions"]) -> "Predictions":
        labels = [label for p in parts for label in p.labels]
        confidence = np.concatenate([p.confidence for p in parts]).astype(np.float32)
        logits = np.concatenate([p.logits for p in parts]) if all(p.logits is not None for p in parts) else None
        detections = ([d for p in parts for d in p.detections]
                      if all(p.detections is not None for p in parts) else None)
        return cls(labels, confidence, logits, detections)


class Model(ABC):
    name: str = "model"
    task: str = "embeddings"  # one of TASKS
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
        """H×W×3 uint8 images → the model's input batch; an empty list gives an empty batch."""

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """A preprocessed batch → float32 vectors [N, embedding_dim]."""
        raise NotImplementedError(f"model {self.name!r} does not compute embeddings")

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """A preprocessed batch → float32 logits [N, len(classes)] (classifiers)."""
        raise NotImplementedError(f"model {self.name!r} has no logits")

    def predict(self, batch: np.ndarray) -> Predictions:
        """A preprocessed batch → :class:`Predictions` (a classifier's come from its logits)."""
        if not self.has_logits:
            raise NotImplementedError(f"model {self.name!r} does not predict classes")
        return Predictions.from_logits(self.logits(batch), self.classes)

    def embed_all(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of a list of H×W×3 uint8 images, in batches: [N, embedding_dim]."""
        return np.concatenate(self._batched(images, self.embed)).astype(np.float32, copy=False)

    def predict_all(self, images: Sequence[np.ndarray]) -> Predictions:
        """Predictions for a list of H×W×3 uint8 images, in batches."""
        return Predictions.concat(self._batched(images, self.predict))

    def _batched(self, images: Sequence[np.ndarray], step) -> list:
        _check_images(images)
        if not len(images):
            raise ValueError("no images given: the list is empty")
        return [step(self.preprocess(images[i:i + self.batch_size])) for i in range(0, len(images), self.batch_size)]

    def describe(self) -> dict:
        """What ``brain models info`` shows about a model instance."""
        return dict(name=self.name, task=self.task, embedding_dim=self.embedding_dim,
                    has_embeddings=self.has_embeddings, has_logits=self.has_logits,
                    classes=len(self.classes) if self.classes else None, batch_size=self.batch_size)


def _check_images(images: Sequence[np.ndarray]) -> None:
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            shape = getattr(img, "shape", None)
            dtype = getattr(img, "dtype", type(img).__name__)
            raise ValueError(f"image {i} must be an H×W×3 uint8 array, got shape {shape} dtype {dtype}")
