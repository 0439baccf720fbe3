import numpy as np
import pytest

from brain.methods import near_duplicates
from tests.quality.tiles import TILE, alter, photos, zoomed_out


@pytest.fixture(scope="module")
def camera():
    return photos()[2]  # skimage's camera man (512×512)


def test_verifier_accepts_rotated_cropped_rescaled_copies(camera):
    rng = np.random.default_rng(0)
    top, left = 200, 200
    tile = camera[top:top + TILE, left:left + TILE]
    copies = [alter(camera, top, left, how, rng) for how in ("rotate", "crop", "shift", "rescale", "combo", "gamma")]
    matches = near_duplicates.verify_pairs([tile] * len(copies), copies)
    assert all(m.passed for m in matches), matches
    assert all(m.ncc >= near_duplicates.MIN_CORR for m in matches)


def test_verifier_rejects_neighbouring_tiles_and_another_zoom(camera):
    top, left = 200, 200
    tile = camera[top:top + TILE, left:left + TILE]
    others = [camera[top:top + TILE, left + TILE:left + 2 * TILE], camera[top + TILE:top + 2 * TILE, left:left + TILE],
              zoomed_out(camera, top, left)]
    matches = near_duplicates.verify_pairs([tile] * len(others), others)
    assert not any(m.passed for m in matches), matches
    zoom = matches[-1]
    assert zoom.scale[0] > near_duplicates.SCALE_RANGE[1] or zoom.ncc < near_duplicates.MIN_CORR


def test_blurred_thumbnail_is_shift_tolerant(camera):
    a = camera[100:100 + TILE, 100:100 + TILE]
    shifted = camera[106:106 + TILE, 94:94 + TILE]
    far = camera[300:300 + TILE, 300:300 + TILE]
    d = near_duplicates.blurred_thumbnails([a, shifted, far])
    assert d.shape == (3, 192) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    assert 1 - d[0] @ d[1] < near_duplicates.DESCRIPTOR_THRESH < 1 - d[0] @ d[2]


def test_bad_images_are_named():
    with pytest.raises(ValueError, match="pair 1 second image"):
        near_duplicates.verify_pairs([np.zeros((32, 32, 3), np.uint8)] * 2,
                                     [np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.float32)])
    with pytest.raises(ValueError, match="image 0: .* too small"):
        near_duplicates.blurred_thumbnails([np.zeros((4, 4, 3), np.uint8)])
