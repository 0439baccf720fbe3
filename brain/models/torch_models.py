"""Torch and ONNX models: a user's ``nn.Module``, TorchScript file or ONNX file, wrapped with one call.

Input transform of every model here: each image is resized (bilinear) to
``input_size``×``input_size`` RGB in ``preprocess`` (uint8, CPU, no weights), then in
the model step ``x = (pixels / 255 − mean) / std`` per channel, NCHW float32.

A wrapped classifier's embedding is its penultimate features when ``head_attr``
names the final layer (that layer is split off: ``embed(x) = body(x)``,
``logits(x) = head(body(x))``); otherwise the module's output is the logits
(with ``classes``) or the embedding (without).

``wrap(obj)`` takes an ``nn.Module``, a TorchScript file (``.pt``/``.ts``/``.torchscript``)
or an ONNX file (``.onnx``); ``torch`` / ``onnxruntime`` are imported only when
such a model is built, so the torch-free parts of the library never need them.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from brain.models.base import Detection, Model, Predictions, _check_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript", ".jit")


class MissingPackageError(ImportError):
    """A model needs a package that is not installed; the message says what to install."""


def require(package: str, *, model: str, install: str | None = None):
    """Import ``package`` or raise :class:`MissingPackageError` naming the pip command."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise MissingPackageError(
            f"model {model!r} needs the Python package {package!r}, which cannot be imported ({err}); "
            f"install it with: pip install {install or package} -c constraints.txt") from None


def resize_batch(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """H×W×3 uint8 images → N×size×size×3 uint8 (bilinear; images already that size are copied as is)."""
    _check_images(images)
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = img if img.shape[:2] == (size, size) else np.asarray(
            Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    return out


class TorchModel(Model):
    """A torch module as a :class:`Model`; ``build`` makes it on ``load`` (so workers build their own)."""

    def __init__(self, build: Callable[[], Any], *, name: str = "torch", task: str = "embeddings",
                 classes: Sequence[str] | None = None, head_attr: str | None = None,
                 embedding_dim: int | None = None, input_size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 batch_size: int = 64, device: str | None = None, num_threads: int | None = None):
        super().__init__(batch_size=batch_size)
        if task not in ("classification", "embeddings"):
            raise ValueError(f"task must be 'classification' or 'embeddings' for a torch module, got {task!r}")
        if task == "classification" and not classes:
            raise ValueError(f"model {name!r}: a classifier needs its class names (classes=[...])")
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        self._build, self.name, self.task = build, name, task
        self.classes = list(classes) if classes else None
        self.has_logits = self.classes is not None
        self.has_embeddings = task == "embeddings" or head_attr is not None
        self.head_attr, self.embedding_dim, self.input_size = head_attr, embedding_dim, input_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.device, self.num_threads = device, num_threads
        self._body = self._head = None

    # -- life cycle -----------------------------------------------------------
    def load(self) -> None:
        if self._body is not None:
            return
        torch = require("torch", model=self.name, install="'lakebrain[torch]'")
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        module = self._build()
        if self.head_attr:
            self._head = getattr(module, self.head_attr)
            setattr(module, self.head_attr, torch.nn.Identity())
            self._head = self._head.to(self.device).eval()
        self._body = module.to(self.device).eval()
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        if self.embedding_dim is None and self.has_embeddings:
            self.embedding_dim = int(self._features(np.zeros((1, self.input_size, self.input_size, 3), np.uint8)).shape[1])

    def close(self) -> None:
        self._body = self._head = None

    # -- steps ----------------------------------------------------------------
    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return resize_batch(images, self.input_size)

    def _tensor(self, batch: np.ndarray):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2).float()
        return (x / 255.0 - self._mean) / self._std

    def _features(self, batch: np.ndarray):
        import torch

        if self._body is None:
            raise RuntimeError(f"model {self.name!r} is not loaded: use `with model:` or load_model()")
        with torch.inference_mode():
            return self._body(self._tensor(batch)).flatten(1)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        if not self.has_embeddings:
            return super().embed(batch)
        return self._features(batch).float().cpu().numpy()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if not self.has_logits:
            return super().logits(batch)
        out = self._features(batch)
        if self._head is not None:
            with torch.inference_mode():
                out = self._head(out)
        return out.float().cpu().numpy()


class TorchDetector(Model):
    """A torchvision-style detector (``module(list_of_CHW) → [{boxes, labels, scores}]``) as a :class:`Model`."""

    task = "detection"
    has_embeddings = False

    def __init__(self, build: Callable[[], Any], *, name: str, classes: Sequence[str], input_size: int = 512,
                 confidence_thresh: float = 0.5, batch_size: int = 8, device: str | None = None,
                 num_threads: int | None = None):
        super().__init__(batch_size=batch_size)
        if not 0.0 <= confidence_thresh <= 1.0:
            raise ValueError(f"confidence_thresh must be in [0, 1], got {confidence_thresh}")
        self._build, self.name, self.classes = build, name, list(classes)
        self.input_size, self.confidence_thresh = input_size, confidence_thresh
        self.device, self.num_threads = device, num_threads
        self._module = None

    def load(self) -> None:
        if self._module is not None:
            return
        torch = require("torch", model=self.name, install="'lakebrain[torch]'")
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        self.device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._module = self._build().to(self.device).eval()

    def close(self) -> None:
        self._module = None

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return resize_batch(images, self.input_size)

    def predict(self, batch: np.ndarray) -> Predictions:
        import torch

        if self._module is None:
            raise RuntimeError(f"model {self.name!r} is not loaded: use `with model:` or load_model()")
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            outputs = self._module(list(x))
        size = float(self.input_size)
        detections = []
        for out in outputs:
            keep = out["scores"] >= self.confidence_thresh
            boxes = (out["boxes"][keep] / size).clamp(0, 1).cpu().numpy()
            dets = [Detection(self.classes[int(label)], (float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                              float(score))
                    for (x0, y0, x1, y1), label, score in zip(boxes, out["labels"][keep].tolist(),
                                                              out["scores"][keep].tolist())]
            detections.append(dets)
        return Predictions.from_detections(detections)


class OnnxModel(Model):
    """An ONNX file run by onnxruntime: one input (NCHW float32), output logits or an embedding."""

    def __init__(self, path: str | Path, *, classes: Sequence[str] | None = None, input_size: int = 224,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 batch_size: int = 64, num_threads: int | None = None):
        super().__init__(batch_size=batch_size)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model file not found: {self.path}")
        self.name = str(self.path)
        self.classes = list(classes) if classes else None
        self.has_logits = self.classes is not None
        self.has_embeddings = not self.has_logits
        self.task = "classification" if self.has_logits else "embeddings"
        self.input_size, self.num_threads = input_size, num_threads
        self._mean = np.array(mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.array(std, np.float32).reshape(1, 3, 1, 1)
        self._session = None

    def load(self) -> None:
        if self._session is not None:
            return
        ort = require("onnxruntime", model=self.name, install="'lakebrain[onnx]'")
        options = ort.SessionOptions()
        if self.num_threads:
            options.intra_op_num_threads = self.num_threads
        self._session = ort.InferenceSession(str(self.path), options, providers=ort.get_available_providers())
        self._input = self._session.get_inputs()[0].name
        if self.has_embeddings and self.embedding_dim is None:
            self.embedding_dim = int(self._run(np.zeros((1, self.input_size, self.input_size, 3), np.uint8)).shape[1])

    def close(self) -> None:
        self._session = None

    def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return resize_batch(images, self.input_size)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._session is None:
            raise RuntimeError(f"model {self.name!r} is not loaded: use `with model:` or load_model()")
        x = (batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - self._mean) / self._std
        return np.asarray(self._session.run(None, {self._input: x})[0], np.float32).reshape(len(batch), -1)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch) if self.has_embeddings else super().embed(batch)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch) if self.has_logits else super().logits(batch)


def wrap(obj: Any, *, classes: Sequence[str] | None = None, head_attr: str | None = None,
         name: str | None = None, input_size: int = 224, **kwargs) -> Model:
    """A :class:`Model` from a user's ``nn.Module``, TorchScript file or ONNX file (see the module doc)."""
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        if path.suffix == ".onnx":
            return OnnxModel(path, classes=classes, input_size=input_size, **kwargs)
        if path.suffix not in TORCHSCRIPT_SUFFIXES:
            raise ValueError(f"cannot tell the model format of {path}: expected .onnx or one of {TORCHSCRIPT_SUFFIXES}")
        if not path.is_file():
            raise FileNotFoundError(f"TorchScript model file not found: {path}")

        def build():
            import torch

            return torch.jit.load(str(path), map_location="cpu")

        return TorchModel(build, name=name or str(path), task="classification" if classes else "embeddings",
                          classes=classes, head_attr=head_attr, input_size=input_size, **kwargs)
    torch = require("torch", model=name or type(obj).__name__, install="'lakebrain[torch]'")
    if not isinstance(obj, torch.nn.Module):
        raise TypeError(f"wrap() takes a torch.nn.Module, a TorchScript file or an ONNX file, got {type(obj).__name__}")
    import copy

    return TorchModel(lambda: copy.deepcopy(obj), name=name or type(obj).__name__, task="classification" if classes else "embeddings",
                      classes=classes, head_attr=head_attr, input_size=input_size, **kwargs)
