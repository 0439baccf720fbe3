"""The model zoo: pretrained models by name, with weights from a local file only.

Nothing is ever downloaded. An entry names its weights file (the file name the
library itself caches it under) and looks for it, in order, in

1. ``weights_dir`` (``models.weights_dir`` in the config, or ``$BRAIN_WEIGHTS_DIR``);
2. torch's own cache, ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``),
   where ``torchvision`` puts the files it downloads on a machine with internet.

A missing file raises :class:`WeightsNotFoundError` naming the file, the folders
searched and the URL to fetch it from; a missing package raises
:class:`~brain.models.torch_models.MissingPackageError` with the pip command.
There is never a silent fallback to random weights or to another model.

``brain models list`` / ``brain models info NAME`` print this table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from brain.models.base import Model
from brain.models.torch_models import TorchDetector, TorchModel, require

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class WeightsNotFoundError(FileNotFoundError):
    """A zoo model's weights file is in none of the folders searched; the message says where to put it."""


def torch_cache_dir() -> Path:
    """torch's checkpoint cache (``torch.hub.get_dir()/checkpoints``), found without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints"


def weights_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    first = weights_dir or os.environ.get("BRAIN_WEIGHTS_DIR")
    return ([Path(first).expanduser()] if first else []) + [torch_cache_dir()]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    task: str  # classification | detection | embeddings
    embedding_dim: int | None
    packages: tuple[str, ...]
    weights_file: str
    weights_url: str
    description: str
    _make: Callable[["ZooEntry", Path, dict], Model] = field(repr=False, compare=False)

    def find_weights(self, weights_dir: str | Path | None = None) -> Path:
        searched = weights_dirs(weights_dir)
        for folder in searched:
            if (folder / self.weights_file).is_file():
                return folder / self.weights_file
        raise WeightsNotFoundError(
            f"model {self.name!r} needs its weights file {self.weights_file!r}, found in none of "
            f"{[str(f) for f in searched]}; this machine downloads nothing: fetch {self.weights_url} "
            f"elsewhere and save it as {searched[0] / self.weights_file} "
            f"(or set models.weights_dir / $BRAIN_WEIGHTS_DIR to the folder holding it)")

    def make(self, *, weights_dir: str | Path | None = None, skip_requirements: bool = False, **kwargs) -> Model:
        """The model with its weights file found; its packages are checked first unless ``skip_requirements``."""
        if not skip_requirements:
            for package in self.packages:
                require(package, model=self.name, install="'lakebrain[vision]'" if package != "open_clip" else
                        "'lakebrain[clip]'")
        return self._make(self, self.find_weights(weights_dir), kwargs)

    def info(self) -> dict:
        return dict(name=self.name, task=self.task, embedding_dim=self.embedding_dim,
                    packages=list(self.packages), weights_file=self.weights_file,
                    weights_searched=[str(f) for f in weights_dirs()], weights_url=self.weights_url,
                    description=self.description)


def _load_state(module, path: Path):
    import torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module


def _torchvision_classifier(arch: str, weights_enum: str, head_attr: str):
    def make(entry: ZooEntry, path: Path, kwargs: dict) -> Model:
        import torchvision

        classes = getattr(torchvision.models, weights_enum).DEFAULT.meta["categories"]

        def build():
            return _load_state(getattr(torchvision.models, arch)(weights=None), path)

        return TorchModel(build, name=entry.name, task="classification", classes=classes, head_attr=head_attr,
                          embedding_dim=entry.embedding_dim, **kwargs)
    return make


def _faster_rcnn(entry: ZooEntry, path: Path, kwargs: dict) -> Model:
    from torchvision.models import detection

    classes = detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    size = kwargs.get("input_size", 512)

    def build():
        module = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(classes),
                                                   min_size=size, max_size=size, box_score_thresh=0.0)
        return _load_state(module, path)

    return TorchDetector(build, name=entry.name, classes=classes, **kwargs)


class OpenClipModel(TorchModel):
    """An open_clip CLIP model: the image tower embeds images, the text tower embeds prompts.

    ``arch`` is an open_clip model config name (``ViT-B-32``, or one added with
    ``open_clip.add_model_config``) and ``weights`` its checkpoint file. Both towers end in
    the same ``embed_dim`` space, so :meth:`embed_text` vectors query an index of
    :meth:`embed` vectors (text search, ``brain similar --text``).
    """

    def __init__(self, arch: str, weights: str | Path, *, name: str | None = None, **kwargs):
        self.arch, self.weights, self._clip = arch, str(weights), None
        super().__init__(self._image_tower, name=name or f"open_clip:{arch}", task="embeddings",
                         mean=CLIP_MEAN, std=CLIP_STD, **{"input_size": 224, **kwargs})

    def _image_tower(self):
        import open_clip

        self._clip = open_clip.create_model(self.arch, pretrained=self.weights)
        return self._clip.visual

    def embed_text(self, prompts: list[str]) -> np.ndarray:
        """float32 [len(prompts), embed_dim]: open_clip's tokenizer, then ``encode_text``."""
        import open_clip
        import torch

        if self._clip is None:
            raise RuntimeError(f"model {self.name!r} is not loaded: use `with model:` or load_model()")
        tokens = open_clip.get_tokenizer(self.arch)(list(prompts)).to(self.device)
        with torch.inference_mode():
            return self._clip.to(self.device).eval().encode_text(tokens).float().cpu().numpy()

    def close(self) -> None:
        super().close()
        self._clip = None


def _open_clip(arch: str):
    def make(entry: ZooEntry, path: Path, kwargs: dict) -> Model:
        return OpenClipModel(arch, path, name=entry.name, embedding_dim=entry.embedding_dim, **kwargs)
    return make


ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("mobilenet-v3-small", "classification", 576, ("torch", "torchvision"), "mobilenet_v3_small-047dcff4.pth",
             "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
             "torchvision MobileNetV3-Small, ImageNet-1k; embedding = pooled features before the classifier",
             _torchvision_classifier("mobilenet_v3_small", "MobileNet_V3_Small_Weights", "classifier")),
    ZooEntry("mobilenet-v3-large", "classification", 960, ("torch", "torchvision"), "mobilenet_v3_large-8738ca79.pth",
             "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
             "torchvision MobileNetV3-Large, ImageNet-1k; embedding = pooled features before the classifier",
             _torchvision_classifier("mobilenet_v3_large", "MobileNet_V3_Large_Weights", "classifier")),
    ZooEntry("resnet-50", "classification", 2048, ("torch", "torchvision"), "resnet50-11ad3fa6.pth",
             "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
             "torchvision ResNet-50 (IMAGENET1K_V2); embedding = pooled features before fc",
             _torchvision_classifier("resnet50", "ResNet50_Weights", "fc")),
    ZooEntry("faster-rcnn-resnet50-fpn", "detection", None, ("torch", "torchvision"),
             "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
             "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
             "torchvision Faster R-CNN ResNet-50 FPN, COCO (91 categories); images resized to input_size (512)",
             _faster_rcnn),
    ZooEntry("clip-vit-b-32", "embeddings", 512, ("torch", "open_clip"), "open_clip-ViT-B-32-laion2b_s34b_b79k.bin",
             "https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_pytorch_model.bin",
             "open_clip ViT-B/32 (LAION-2B): image tower for embeddings, text tower for text search; "
             "saved under this file name",
             _open_clip("ViT-B-32")),
]}
