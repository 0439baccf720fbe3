"""Wrapping a user's torch module / TorchScript / ONNX file; predictions; patches; registered vectors."""

import numpy as np
import pytest

from brain.models import Detection, Predictions, load_model, wrap
from brain.models.torch_models import MissingPackageError, require
from brain.patches import crop, patches_from_detections

torch = pytest.importorskip("torch", reason="torch is the optional extra lakebrain[torch]")


def tiny_net(classes: int = 3):
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("features", torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.ReLU(),
                                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()))
    net.add_module("head", torch.nn.Linear(4, classes))
    return net


def images(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, size=(rng.integers(10, 30), rng.integers(10, 30), 3), dtype=np.uint8) for _ in range(n)]


def test_wrapped_module_embeds_penultimate_features_and_predicts_from_logits():
    net = tiny_net()
    with wrap(net, classes=["a", "b", "c"], head_attr="head", input_size=16, batch_size=3) as model:
        vectors = model.embed_all(images(7))
        preds = model.predict_all(images(7))
    assert model.task == "classification" and model.has_logits and model.has_embeddings
    assert vectors.shape == (7, 4) and model.embedding_dim == 4 and vectors.dtype == np.float32
    assert preds.logits.shape == (7, 3) and len(preds) == 7
    probs = np.exp(preds.logits) / np.exp(preds.logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(preds.confidence, probs.max(axis=1), rtol=1e-5)
    assert preds.labels == [["a", "b", "c"][i] for i in probs.argmax(axis=1)]
    # the logits are the head applied to the embedding, and the user's module is left as it was
    expected = net.head(torch.from_numpy(vectors)).detach().numpy()
    np.testing.assert_allclose(preds.logits, expected, rtol=1e-4, atol=1e-5)
    assert isinstance(net.head, torch.nn.Linear)


def test_torchscript_file_gives_the_same_outputs(tmp_path):
    net = tiny_net()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    imgs = images(5, seed=1)
    direct = wrap(net, input_size=16)
    with direct, load_model(str(path), input_size=16) as from_file:
        np.testing.assert_allclose(from_file.embed_all(imgs), direct.embed_all(imgs), rtol=1e-5)
    assert from_file.task == "embeddings" and from_file.embedding_dim == 3


def test_onnx_file_gives_the_same_outputs(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is optional (pip install onnxruntime)")
    pytest.importorskip("onnx", reason="exporting to ONNX needs the onnx package")
    net = tiny_net().eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    imgs = images(4, seed=2)
    with wrap(net, classes=["a", "b", "c"], input_size=16) as direct, \
            load_model(str(path), classes=["a", "b", "c"], input_size=16) as onnx:
        np.testing.assert_allclose(onnx.predict_all(imgs).logits, direct.predict_all(imgs).logits, rtol=1e-4, atol=1e-5)


def test_wrap_rejects_what_it_cannot_use(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the model format"):
        wrap(tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError, match="TorchScript model file not found"):
        wrap(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        wrap(object())
    with pytest.raises(MissingPackageError, match="pip install no_such_package_xyz"):
        require("no_such_package_xyz", model="m")


def test_predictions_math_and_detections():
    preds = Predictions.from_logits(np.array([[0.0, np.log(3.0)], [2.0, 2.0]]), ["x", "y"])
    assert preds.labels == ["y", "x"]
    np.testing.assert_allclose(preds.confidence, [0.75, 0.5])
    with pytest.raises(ValueError, match="one column per class"):
        Predictions.from_logits(np.zeros((2, 3)), ["x", "y"])
    dets = Predictions.from_detections([[Detection("cat", (0, 0, .5, .5), .4), Detection("dog", (.1, .1, .2, .2), .9)], []])
    assert dets.labels == ["dog", None] and dets.confidence.tolist() == pytest.approx([0.9, 0.0])
    both = Predictions.concat([dets, dets])
    assert len(both) == 4 and both.logits is None and len(both.detections) == 4


def test_patch_crops_match_their_boxes():
    img = np.arange(20 * 10 * 3, dtype=np.uint8).reshape(20, 10, 3)  # H=20, W=10
    patch = crop(img, [0.2, 0.25, 0.5, 0.5])
    np.testing.assert_array_equal(patch, img[5:15, 2:7])
    assert crop(img, [0.99, 0.99, 0.001, 0.001]).shape == (1, 1, 3)  # never empty
    table = patches_from_detections(["s1", "s2"], [[{"label": "a", "bbox": [0, 0, .5, .5]},
                                                    {"label": "b", "bbox": [.5, .5, .5, .5], "confidence": 0.1}], None],
                                    min_confidence=0.5)
    assert table.to_pylist() == [{"sample_id": "s1", "patch_index": 0, "label": "a", "bbox": [0.0, 0.0, 0.5, 0.5]}]
    with pytest.raises(ValueError, match="sample s9: box 0 bbox"):
        patches_from_detections(["s9"], [[{"label": "a", "bbox": [0, 0, 2, .5]}]])
