"""Real photo tiles and altered copies for the near-duplicate quality test (no downloads).

Tiles: 96×96 RGB cuts (stride 96, a 4-pixel margin kept for shifts) of the photos that
ship with scikit-image and scikit-learn. Flat tiles (grey std < 6) are dropped, and so
are tiles whose thumbnail embedding lies within cosine distance ``distinct`` of an
earlier kept tile (already near-identical: e.g. two patches of clear sky).
Alterations of a tile: noise (uniform ±8 grey levels), brightness (×0.85), shift
(the cut moved 2 pixels right and down), jpeg (quality 50), crop (the central 95%
resized back to 96×96).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

TILE = 96
MARGIN = 4
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "brick", "moon", "rocket",
          "hubble_deep_field", "immunohistochemistry", "retina", "clock", "page", "text", "cell")
ALTERATIONS = ("noise", "brightness", "shift", "jpeg", "crop")


def photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        out.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
    out.extend(np.asarray(img) for img in load_sample_images().images)
    return [np.ascontiguousarray(img, dtype=np.uint8) for img in out]


def cuts(images: list[np.ndarray]) -> list[tuple[int, int, int]]:
    """(image, top, left) of every tile position with a margin inside the image."""
    found = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        for top in range(MARGIN, h - TILE - MARGIN + 1, TILE):
            for left in range(MARGIN, w - TILE - MARGIN + 1, TILE):
                found.append((i, top, left))
    return found


def alter(images: list[np.ndarray], cut: tuple[int, int, int], how: str, rng: np.random.Generator) -> np.ndarray:
    i, top, left = cut
    tile = images[i][top:top + TILE, left:left + TILE]
    if how == "noise":
        return np.clip(tile.astype(np.int16) + rng.integers(-8, 9, tile.shape), 0, 255).astype(np.uint8)
    if how == "brightness":
        return np.round(tile * 0.85).astype(np.uint8)
    if how == "shift":
        return images[i][top + 2:top + 2 + TILE, left + 2:left + 2 + TILE].copy()
    if how == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(tile).save(buf, format="JPEG", quality=50)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    if how == "crop":
        c = round(TILE * 0.025)
        return np.asarray(Image.fromarray(tile[c:TILE - c, c:TILE - c]).resize((TILE, TILE), Image.Resampling.BILINEAR))
    raise ValueError(f"unknown alteration {how!r}; known: {ALTERATIONS}")


def dataset(*, copies_per_alteration: int = 40, distinct: float = 0.15, seed: int = 0):
    """(tiles [M, 96, 96, 3], source row of each tile (−1 for originals), alteration name or '')."""
    from brain.models import load_model

    images = photos()
    rng = np.random.default_rng(seed)
    tiles, kept = [], []
    for cut in cuts(images):
        i, top, left = cut
        tile = images[i][top:top + TILE, left:left + TILE]
        if tile.mean(axis=2).std() >= 6:
            tiles.append(tile)
            kept.append(cut)
    with load_model() as model:
        vec = model.embed_all(tiles)
    sim = vec @ vec.T
    keep = []
    for r in range(len(tiles)):
        if not keep or 1.0 - sim[r, keep].max() > distinct:
            keep.append(r)
    originals = [tiles[r] for r in keep]
    sources, kinds = [-1] * len(originals), [""] * len(originals)
    out = list(originals)
    for how in ALTERATIONS:
        for r in rng.choice(len(keep), min(copies_per_alteration, len(keep)), replace=False):
            out.append(alter(images, kept[keep[r]], how, rng))
            sources.append(int(r))
            kinds.append(how)
    return np.stack(out), np.asarray(sources), np.asarray(kinds)
