"""Zoo entries load through the same code as with real weights, from a weights file the test saves itself."""

import numpy as np
import pytest

from brain.models import ZOO, WeightsNotFoundError, get_model, load_model

torch = pytest.importorskip("torch", reason="torch is the optional extra lakebrain[vision]")
torchvision = pytest.importorskip("torchvision", reason="torchvision is the optional extra lakebrain[vision]")


def save_random_weights(folder, name, module):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), folder / ZOO[name].weights_file)


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, size=(48, 40, 3), dtype=np.uint8) for _ in range(n)]


def test_classifier_loads_local_weights_with_documented_shapes(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(weights=None)
    save_random_weights(tmp_path, "mobilenet-v3-small", net)
    with load_model("mobilenet-v3-small", weights_dir=str(tmp_path), input_size=64, batch_size=2) as model:
        vectors = model.embed_all(images(3))
        preds = model.predict_all(images(3))
    assert vectors.shape == (3, ZOO["mobilenet-v3-small"].embedding_dim) == (3, 576)
    assert preds.logits.shape == (3, 1000) and len(model.classes) == 1000
    assert set(preds.labels) <= set(model.classes) and ((preds.confidence > 0) & (preds.confidence <= 1)).all()
    # the weights really came from the file: the same module gives the same logits
    x = torch.from_numpy(model.preprocess(images(3))).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        np.testing.assert_allclose(preds.logits, net.eval()(x).numpy(), rtol=1e-4, atol=1e-4)


def test_torch_cache_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("BRAIN_WEIGHTS_DIR", raising=False)
    save_random_weights(tmp_path / "torch" / "hub" / "checkpoints", "mobilenet-v3-small",
                        torchvision.models.mobilenet_v3_small(weights=None))
    assert get_model("mobilenet-v3-small").name == "mobilenet-v3-small"


def test_detector_gives_relative_boxes(tmp_path):
    torch.manual_seed(0)
    from torchvision.models import detection

    save_random_weights(tmp_path, "faster-rcnn-resnet50-fpn",
                        detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91))
    with load_model("faster-rcnn-resnet50-fpn", weights_dir=str(tmp_path), input_size=96,
                    confidence_thresh=0.0) as model:
        preds = model.predict_all(images(2))
    assert model.task == "detection" and not model.has_embeddings and len(preds.detections) == 2
    dets = [d for per_image in preds.detections for d in per_image]
    assert dets, "a random detector with confidence_thresh=0 still proposes boxes"
    for d in dets:
        x, y, w, h = d.bbox
        assert 0 <= x <= 1 and 0 <= y <= 1 and 0 <= w and x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6
        assert d.label in model.classes and 0 <= d.confidence <= 1


def test_missing_weights_file_says_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError) as err:
        get_model("resnet-50", weights_dir=str(tmp_path / "weights"))
    message = str(err.value)
    assert "resnet50-11ad3fa6.pth" in message and str(tmp_path / "weights") in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message


def test_clip_image_tower_loads_local_weights(tmp_path):
    open_clip = pytest.importorskip("open_clip", reason="open_clip is the optional extra lakebrain[clip]")
    torch.manual_seed(0)
    save_random_weights(tmp_path, "clip-vit-b-32", open_clip.create_model("ViT-B-32"))
    with load_model("clip-vit-b-32", weights_dir=str(tmp_path), batch_size=2) as model:
        vectors = model.embed_all(images(2))
    assert vectors.shape == (2, 512) and np.isfinite(vectors).all()
