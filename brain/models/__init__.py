"""Models: the interface, the registry, and ``load_model``.

The default model is ``thumbnail`` (:mod:`brain.models.thumbnail`): it needs no
weights, so the demo and the tests run on a machine that cannot download any.
"""

from __future__ import annotations

from typing import Callable

from brain.models.base import Model
from brain.models.thumbnail import ThumbnailModel

DEFAULT_MODEL = "thumbnail"

_REGISTRY: dict[str, Callable[..., Model]] = {
    "thumbnail": ThumbnailModel,
}


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model(name: str | None = None, **kwargs) -> Model:
    """A model by name (None: the default model), not loaded yet: enough to ``preprocess``."""
    name = name or DEFAULT_MODEL
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {available_models()}") from None
    return factory(**kwargs)


def load_model(name: str | None = None, **kwargs) -> Model:
    """A loaded model by name (None: the default model), ready to ``embed_all``."""
    model = get_model(name, **kwargs)
    model.load()
    return model


__all__ = ["Model", "DEFAULT_MODEL", "available_models", "get_model", "load_model"]
