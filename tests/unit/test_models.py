import numpy as np
import pytest

from brain.models import DEFAULT_MODEL, available_models, load_model


def test_default_model_embeds_to_unit_vectors():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8) for h, w in [(8, 8), (40, 30), (64, 64)]]
    with load_model() as model:
        assert model.name == DEFAULT_MODEL
        vectors = model.embed_all(images)
    assert vectors.shape == (3, model.embedding_dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_same_image_same_vector_and_brightness_offset_cancels():
    img = np.random.default_rng(1).integers(20, 200, size=(32, 32, 3), dtype=np.uint8)
    model = load_model("thumbnail")
    a, b = model.embed_all([img, img + 30])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_flat_image_is_the_zero_vector():
    v = load_model().embed_all([np.full((10, 10, 3), 7, np.uint8)])
    assert not v.any()


def test_batching_does_not_change_results():
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8) for _ in range(10)]
    np.testing.assert_array_equal(load_model(batch_size=3).embed_all(images), load_model(batch_size=10).embed_all(images))


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3))])
def test_bad_image_shape_names_the_image(bad):
    good = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="image 1 must be an H×W×3 uint8 array"):
        load_model().embed_all([good, bad])


def test_empty_list_and_unknown_model():
    with pytest.raises(ValueError, match="empty"):
        load_model().embed_all([])
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        load_model("nope")
    assert DEFAULT_MODEL in available_models()
