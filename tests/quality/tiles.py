"""Real photo tiles, altered copies and hard negatives for near-duplicate evaluation (no downloads).

Used by tests/quality (a small set) and bench/near_duplicates.py (the full set).

Originals: 96×96 RGB cuts (stride 96, a 12-pixel margin kept for rotations and shifts)
of every photo that ships with scikit-image (those that need no download; the synthetic
figures left out) and scikit-learn. Flat tiles (grey std < 6) are dropped, and so are
natural near-duplicates: tiles whose thumbnail embedding lies within cosine distance
``distinct`` of an earlier kept tile (two patches of clear sky, the same cat twice).

Copies of an original, one alteration family each (parameters drawn per copy):

    rotate      ±1–5° about the tile centre, cut from the photo (no black corners)
    crop        2–10% off each side independently, resized back to 96×96 (aspect changes)
    shift       the cut moved 2–8 pixels in each direction
    rescale     the tile resized by 0.5–2× with an aspect change up to 10%
    jpeg        JPEG quality 30–60
    noise       Gaussian, σ 4–10 grey levels
    blur        Gaussian, radius 0.8–1.6 pixels
    brightness  ×0.7–1.3
    contrast    ×0.6–1.5 about the mean grey
    gamma       0.6–1.6
    combo       two of the above, one geometric and one photometric
    flip        horizontal mirror (only with ``flips=True``)

Hard negatives (extra originals, never a copy of anything): the neighbouring tiles of
one photo are already among the originals; ``zoom`` adds, for some originals, the
same scene zoomed out 2× (the 192×192 region around the tile, resized to 96×96).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

TILE = 96
MARGIN = 12
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "grass",
                  "gravel", "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina",
                  "rocket", "text")
GEOMETRIC = ("rotate", "crop", "shift", "rescale")
PHOTOMETRIC = ("jpeg", "noise", "blur", "brightness", "contrast", "gamma")
ALTERATIONS = (*GEOMETRIC, *PHOTOMETRIC, "combo")


def photos() -> list[np.ndarray]:
    """Every offline sample photo as H×W×3 uint8 (stereo_motorcycle: its left view only)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    found = [np.asarray(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS]
    found.append(np.asarray(skimage.data.stereo_motorcycle()[0]))
    found.extend(np.asarray(img) for img in load_sample_images().images)
    return [np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3],
                                 dtype=np.uint8) for img in found]


def cuts(images: list[np.ndarray]) -> list[tuple[int, int, int]]:
    """(image, top, left) of every tile position with a margin inside the image."""
    found = []
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        for top in range(MARGIN, h - TILE - MARGIN + 1, TILE):
            for left in range(MARGIN, w - TILE - MARGIN + 1, TILE):
                found.append((i, top, left))
    return found


def _jpeg(tile: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(tile).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _photometric(tile: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    x = tile.astype(np.float64)
    if how == "jpeg":
        return _jpeg(tile, int(rng.integers(30, 61)))
    if how == "noise":
        x = x + rng.normal(0.0, rng.uniform(4, 10), tile.shape)
    elif how == "blur":
        return np.asarray(Image.fromarray(tile).filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.6))))
    elif how == "brightness":
        x = x * rng.uniform(0.7, 1.3)
    elif how == "contrast":
        x = (x - x.mean()) * rng.uniform(0.6, 1.5) + x.mean()
    elif how == "gamma":
        x = 255.0 * (x / 255.0) ** rng.uniform(0.6, 1.6)
    else:
        raise ValueError(f"unknown photometric alteration {how!r}; known: {PHOTOMETRIC}")
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _geometric(photo: np.ndarray, top: int, left: int, how: str, rng: np.random.Generator) -> np.ndarray:
    tile = photo[top:top + TILE, left:left + TILE]
    if how == "rotate":
        import cv2

        angle = rng.uniform(1, 5) * rng.choice([-1, 1])
        m = cv2.getRotationMatrix2D((left + TILE / 2, top + TILE / 2), angle, 1.0)
        m[:, 2] -= (left, top)  # rotate about the tile centre, then cut the tile window
        return cv2.warpAffine(photo, m, (TILE, TILE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if how == "crop":
        t, b, l_, r = (round(TILE * f) for f in rng.uniform(0.02, 0.10, 4))
        kept = Image.fromarray(tile[t:TILE - b, l_:TILE - r])
        return np.asarray(kept.resize((TILE, TILE), Image.Resampling.BILINEAR))
    if how == "shift":
        dy, dx = rng.integers(2, 9, 2) * rng.choice([-1, 1], 2)
        return photo[top + dy:top + dy + TILE, left + dx:left + dx + TILE].copy()
    if how == "rescale":
        scale = rng.uniform(0.5, 2.0)
        aspect = rng.uniform(0.9, 1.1)
        size = (max(8, round(TILE * scale * aspect)), max(8, round(TILE * scale)))
        return np.asarray(Image.fromarray(tile).resize(size, Image.Resampling.BILINEAR))
    if how == "flip":
        return tile[:, ::-1].copy()
    raise ValueError(f"unknown geometric alteration {how!r}; known: {GEOMETRIC}")


def alter(photo: np.ndarray, top: int, left: int, how: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of the tile at (top, left) of ``photo`` altered by ``how`` (module docstring)."""
    if how == "combo":
        geometric = _geometric(photo, top, left, str(rng.choice(GEOMETRIC)), rng)
        return _photometric(geometric, str(rng.choice(PHOTOMETRIC)), rng)
    if how in PHOTOMETRIC:
        return _photometric(photo[top:top + TILE, left:left + TILE], how, rng)
    return _geometric(photo, top, left, how, rng)


def zoomed_out(photo: np.ndarray, top: int, left: int) -> np.ndarray | None:
    """The 2·TILE region centred on the tile, resized to TILE (None near the photo's edge)."""
    t, l_ = top - TILE // 2, left - TILE // 2
    if t < 0 or l_ < 0 or t + 2 * TILE > photo.shape[0] or l_ + 2 * TILE > photo.shape[1]:
        return None
    region = Image.fromarray(photo[t:t + 2 * TILE, l_:l_ + 2 * TILE])
    return np.asarray(region.resize((TILE, TILE), Image.Resampling.BOX))


def dataset(*, copies_per_alteration: int = 40, zoom_negatives: int = 40, distinct: float = 0.15,
            flips: bool = False, max_originals: int | None = None, seed: int = 0):
    """(images, source, kind): a list of H×W×3 uint8 images (sizes differ for ``rescale``), the row of
    each copy's original (−1 for originals and hard negatives) and its alteration ('' for originals,
    'zoom' for hard negatives). Originals come first, then the hard negatives, then the copies."""
    from brain.models import load_model

    images = photos()
    rng = np.random.default_rng(seed)
    tiles, positions = [], []
    for i, top, left in cuts(images):
        tile = images[i][top:top + TILE, left:left + TILE]
        if tile.mean(axis=2).std() >= 6:
            tiles.append(tile)
            positions.append((i, top, left))
    with load_model() as model:
        vec = model.embed_all(tiles)
    sim = vec @ vec.T
    keep: list[int] = []
    for r in range(len(tiles)):
        if not keep or 1.0 - sim[r, keep].max() > distinct:
            keep.append(r)
    if max_originals is not None and len(keep) > max_originals:
        keep = sorted(rng.choice(keep, max_originals, replace=False).tolist())
    out = [tiles[r] for r in keep]
    sources, kinds = [-1] * len(out), [""] * len(out)
    for r in rng.permutation(len(keep)):
        if kinds.count("zoom") == zoom_negatives:
            break
        i, top, left = positions[keep[r]]
        zoomed = zoomed_out(images[i], top, left)
        if zoomed is not None:
            out.append(zoomed)
            sources.append(-1)
            kinds.append("zoom")
    for how in (*ALTERATIONS, "flip") if flips else ALTERATIONS:
        for r in rng.choice(len(keep), min(copies_per_alteration, len(keep)), replace=False):
            i, top, left = positions[keep[r]]
            out.append(alter(images[i], top, left, how, rng))
            sources.append(int(r))
            kinds.append(how)
    return out, np.asarray(sources), np.asarray(kinds)


def evaluate(found: dict, source: np.ndarray, kind: np.ndarray) -> tuple[dict[str, float], float]:
    """Recall per alteration (the copy and its original share a kept sample) and precision (of the
    reported duplicates, those whose kept sample is a copy of the same original or the original)."""
    kept_of = {d: k for k, dups in found.items() for d, _ in dups}
    originals = np.flatnonzero(kind == "")
    origin = np.where(source < 0, np.arange(len(source)), originals[np.maximum(source, 0)])
    recall = {}
    for how in sorted(set(kind[source >= 0].tolist())):
        rows = np.flatnonzero(kind == how)
        recall[how] = float(np.mean([kept_of.get(r, r) == kept_of.get(originals[source[r]], originals[source[r]])
                                     for r in rows]))
    right = [origin[d] == origin[k] for d, k in kept_of.items()]
    return recall, float(np.mean(right)) if right else 1.0
