"""Your own model by import path (a Model subclass or any object with embed_all/predict_all),
models.skip_requirements, and confidence_thresh on a classifier's predictions."""

import dataclasses

import numpy as np
import pytest

from brain.models import ZOO, MissingPackageError, ObjectModel, Predictions, WeightsNotFoundError, get_model

MODULE = '''
import numpy as np

from brain.models import Model


class MeanColour(Model):
    name = "mean-colour"
    embedding_dim = 3

    def __init__(self, *, batch_size=64, scale=1.0):
        super().__init__(batch_size=batch_size)
        self.scale = scale

    def preprocess(self, images):
        return np.stack([img.reshape(-1, 3).mean(axis=0) for img in images]) if images else np.zeros((0, 3))

    def embed(self, batch):
        return (batch * self.scale).astype(np.float32)


class Duck:
    classes = ["dark", "light"]

    def embed_all(self, images):
        return [[float(img.mean())] for img in images]

    def predict_all(self, images):
        return np.array([[0.0, img.mean() / 64] for img in images])


def not_a_model(**kwargs):
    return object()
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))


def _images():
    return [np.full((4, 5, 3), v, np.uint8) for v in (0, 64, 200)]


def test_a_model_subclass_by_import_path_gets_the_arguments_it_accepts(user_module):
    model = get_model("my_models:MeanColour", batch_size=2, weights_dir="/ignored", num_threads=1)
    assert model.batch_size == 2 and model.name == "mean-colour"
    np.testing.assert_allclose(model.embed_all(_images())[:, 0], [0, 64, 200])


def test_any_object_with_embed_all_or_predict_all_is_wrapped(user_module):
    model = get_model("my_models:Duck", batch_size=2)
    assert isinstance(model, ObjectModel) and model.has_embeddings and model.has_logits
    np.testing.assert_allclose(model.embed_all(_images())[:, 0], [0, 64, 200])
    preds = model.predict_all(_images())
    assert preds.labels == ["dark", "light", "light"] and preds.logits.shape == (3, 2)
    with pytest.raises(ValueError, match="images of different sizes"):
        model.embed_all([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 5, 3), np.uint8)])
    resized = get_model("my_models:Duck", input_size=8)
    assert resized.embed_all([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 5, 3), np.uint8)]).shape == (2, 1)


def test_bad_import_paths_say_what_failed(user_module):
    with pytest.raises(ImportError, match="cannot import module 'nowhere'.*code_paths"):
        get_model("nowhere:Net")
    with pytest.raises(ValueError, match="has no attribute 'Missing'"):
        get_model("my_models:Missing")
    with pytest.raises(TypeError, match="neither a brain.models.Model nor an object with embed_all"):
        get_model("my_models:not_a_model")


def test_skip_requirements_skips_the_package_check(monkeypatch, tmp_path):
    entry = dataclasses.replace(ZOO["resnet-50"], packages=("no_such_package_here",))
    monkeypatch.setitem(ZOO, "resnet-50", entry)
    with pytest.raises(MissingPackageError, match="no_such_package_here"):
        get_model("resnet-50", weights_dir=str(tmp_path))
    with pytest.raises(WeightsNotFoundError):  # past the package check, on to the weights
        get_model("resnet-50", weights_dir=str(tmp_path), skip_requirements=True)


def test_confidence_thresh_nulls_unsure_classifier_labels_and_keeps_the_rest():
    preds = Predictions.from_logits(np.array([[4.0, 0.0], [0.2, 0.0], [0.0, 3.0]]), ["a", "b"])
    kept = preds.thresholded(0.9)
    assert kept.labels == ["a", None, "b"]
    np.testing.assert_array_equal(kept.confidence, preds.confidence)
    np.testing.assert_array_equal(kept.logits, preds.logits)
