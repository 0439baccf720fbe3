"""Your own model by import path: ``embed.model=my_pkg.models:MyNet`` (also apply-model, patches).

The name ``MODULE:ATTRIBUTE`` is imported (the module must be importable where the model
runs: on the driver's ``sys.path`` and, for Ray jobs, shipped with ``code_paths``) and
``ATTRIBUTE`` is called with the keyword arguments it accepts among the job's (``batch_size``,
``weights_dir``, ``input_size``, ``num_threads``, ...). What it returns is used as is when it is a
:class:`~brain.models.Model`; any other object with ``embed_all(images)`` and/or
``predict_all(images)`` (lists of H×W×3 uint8 arrays) is wrapped by :class:`ObjectModel`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from brain.models.base import Model, Predictions, _check_images
from brain.plugins import import_object


def import_model(path: str, **kwargs) -> Model:
    """The model that ``MODULE:ATTRIBUTE`` makes (see the module docstring)."""
    factory = import_object(path, what="model")
    obj = factory(**_accepted(factory, kwargs))
    if isinstance(obj, Model):
        return obj
    if hasattr(obj, "embed_all") or hasattr(obj, "predict_all"):
        return ObjectModel(obj, name=path, **{k: v for k, v in kwargs.items() if k in ("batch_size", "input_size")})
    raise TypeError(f"model {path!r}: {factory!r} returned a {type(obj).__name__}, which is neither a "
                    "brain.models.Model nor an object with embed_all / predict_all")


def _accepted(factory: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(kwargs)
    names = {p.name for p in params}
    return {k: v for k, v in kwargs.items() if k in names}


class ObjectModel(Model):
    """An object with ``embed_all`` / ``predict_all`` as a :class:`Model`.

    ``preprocess`` resizes to ``input_size`` when given (else the images of a batch must share
    one size); ``embed`` / ``predict`` hand the batch to the object as a list of images.
    ``predict_all`` may return :class:`Predictions` or logits ``[N, len(obj.classes)]``.
    The object's ``load`` / ``close``, if it has them, are called with the model's.
    """

    def __init__(self, obj: Any, *, name: str, input_size: int | None = None, batch_size: int = 64):
        super().__init__(batch_size=batch_size)
        self.obj, self.name, self.input_size = obj, name, input_size
        self.classes = list(obj.classes) if getattr(obj, "classes", None) else None
        self.has_embeddings = hasattr(obj, "embed_all")
        self.has_logits = hasattr(obj, "predict_all") and self.classes is not None
        self.task = getattr(obj, "task", "classification" if self.has_logits else "embeddings")
        self.embedding_dim = getattr(obj, "embedding_dim", None)

    def load(self) -> None:
        if hasattr(self.obj, "load"):
            self.obj.load()

    def close(self) -> None:
        if hasattr(self.obj, "close"):
            self.obj.close()

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        from brain.models.torch_models import resize_batch

        if self.input_size:
            return resize_batch(images, self.input_size)
        _check_images(images)
        if len({img.shape for img in images}) > 1:
            raise ValueError(f"model {self.name!r}: images of different sizes {sorted({i.shape for i in images})[:3]} "
                             "in one batch: set models.input_size to resize them")
        return np.stack(images) if len(images) else np.zeros((0, 1, 1, 3), np.uint8)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        if not self.has_embeddings:
            return super().embed(batch)
        return np.asarray(self.obj.embed_all(list(batch)), dtype=np.float32)

    def predict(self, batch: np.ndarray) -> Predictions:
        if not hasattr(self.obj, "predict_all"):
            return super().predict(batch)
        out = self.obj.predict_all(list(batch))
        if isinstance(out, Predictions):
            return out
        if self.classes is None:
            raise ValueError(f"model {self.name!r}: predict_all returned logits, but the object has no `classes`")
        return Predictions.from_logits(np.asarray(out), self.classes)
