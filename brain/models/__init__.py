"""Models: the interface, the registry, and ``load_model``.

The default model is ``thumbnail`` (:mod:`brain.models.thumbnail`): it needs no
weights and no torch, so the demo and the tests run on a machine that cannot
download any. Zoo models (:mod:`brain.models.zoo`: torchvision classifiers and
detector, open_clip) load weights from a local file only.

A model name is one of: a built-in (``thumbnail``), a zoo entry (``resnet-50``, …),
a path to a TorchScript (``.pt``/``.ts``) or ONNX (``.onnx``) file, which is
wrapped with :func:`brain.models.torch_models.wrap`, or the import path of your own
model (``my_pkg.models:MyNet``, see :mod:`brain.models.user`).

``skip_requirements=True`` (``models.skip_requirements``; FiftyOne's ``error_level``)
skips the check that a zoo model's packages import before it is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from brain.models.base import Detection, Model, Predictions
from brain.models.thumbnail import ThumbnailModel
from brain.models.torch_models import TORCHSCRIPT_SUFFIXES, MissingPackageError, wrap
from brain.models.user import ObjectModel, import_model
from brain.models.zoo import ZOO, WeightsNotFoundError
from brain.plugins import is_import_path

DEFAULT_MODEL = "thumbnail"

_REGISTRY: dict[str, Callable[..., Model]] = {
    "thumbnail": ThumbnailModel,
}


def available_models() -> list[str]:
    return sorted(_REGISTRY) + sorted(ZOO)


def get_model(name: str | None = None, **kwargs) -> Model:
    """A model by name or file path (None: the default model), not loaded yet: enough to ``preprocess``."""
    name = name or DEFAULT_MODEL
    skip_requirements = kwargs.pop("skip_requirements", False)
    if name in _REGISTRY:
        kwargs.pop("weights_dir", None)
        return _REGISTRY[name](**kwargs)
    if name in ZOO:
        return ZOO[name].make(skip_requirements=skip_requirements, **kwargs)
    if Path(name).suffix in (*TORCHSCRIPT_SUFFIXES, ".onnx"):
        kwargs.pop("weights_dir", None)
        return wrap(name, **kwargs)
    if is_import_path(name):
        return import_model(name, **kwargs)
    raise ValueError(f"unknown model {name!r}; available: {available_models()}, a TorchScript (.pt/.ts) or "
                     f"ONNX (.onnx) file path, or your model's import path (my_pkg.models:MyNet)")


def load_model(name: str | None = None, **kwargs) -> Model:
    """A loaded model by name (None: the default model), ready to ``embed_all``."""
    model = get_model(name, **kwargs)
    model.load()
    return model


__all__ = ["Model", "Predictions", "Detection", "DEFAULT_MODEL", "available_models", "get_model", "load_model",
           "wrap", "ZOO", "WeightsNotFoundError", "MissingPackageError", "ObjectModel", "import_model"]
