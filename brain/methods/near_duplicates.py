"""Near-duplicate images that survive geometric edits: a second candidate descriptor and a
verification that accepts a similarity transform (OpenCV; arrays in, arrays out).

Candidates. The default embedding (a 16×16 colour thumbnail) moves far under an 8-pixel
shift or a 10% crop of a textured image: its kNN graph misses such copies. The
*blurred thumbnail* tolerates them: the image resized to 64×64 (area averaging), blurred
by a Gaussian of σ = 3.84 px (6% of the side), resized to 8×8 colour, centred and
L2-normalised (D = 192):

    b(x) = (t − mean(t)) / ‖t − mean(t)‖₂,   t = area_8(G_σ * area_64(x))

Its kNN edges (the ``DESCRIPTOR_K`` = 5 nearest, cosine distance ≤ ``DESCRIPTOR_THRESH``)
join the embedding's kNN edges (≤ the candidate threshold) as candidate pairs. The rank
does the work and the threshold is loose: the copy of a textured tile can lie at 0.3–0.5
and still be its original's nearest neighbour.

Verification of a candidate pair (a, b), both made grey 128×128:

1. Transform, a cascade from the cheapest start. (i) The shift found by phase correlation
   (``cv2.phaseCorrelate``, Hanning window) is checked (2–4). (ii) ORB keypoints
   (``cv2.ORB_create``, detected only now), Hamming matches with cross-check, and a
   4-degree-of-freedom similarity transform (rotation, uniform scale, shift) fitted by
   RANSAC (``cv2.estimateAffinePartial2D``, 3-px reprojection error) is checked when it has
   ≥ ``MIN_INLIERS`` inliers and is plausible; it finds crops and rescales the shift misses.
   (iii) ECC refines each start whose correlation reached ``ECC_FROM_NCC`` (keypoint start
   first; ``cv2.findTransformECC``, affine motion, on 64×64 smoothed images) and the refined
   map is checked. The first map that passes wins. About 95% of true pairs pass at a start
   (i or ii); ECC, the costliest step, from a start below ECC_FROM_NCC = 0.3 almost never
   reaches min_corr (measured: 2 of 1,016 passes on bench/pipeline_scale.py's crops, 0 of
   1,156 on the tiles of bench/near_duplicates.py), so it is not tried.
2. Plausibility. With A the linear part of the refined map a → b, its singular values
   σ₁ ≥ σ₂ and its rotation θ: SCALE_RANGE[0] ≤ σ₂ ≤ σ₁ ≤ SCALE_RANGE[1],
   σ₁/σ₂ ≤ MAX_ANISOTROPY, |θ| ≤ MAX_ROTATION_DEG. This admits rotations up to ±10°,
   crops up to 10% per side, aspect changes and rescaling (both images are resized to
   128×128 first), and rejects the same scene at another zoom.
3. Overlap. The share of a's pixels that land inside b, f_a, and the share of b covered,
   f_b = min(1, |det A|·f_a); max(f_a, f_b) ≥ MIN_OVERLAP (a crop covers all of b).
4. Appearance. The normalised cross-correlation of a and warped b (both smoothed, σ = 1.5
   px) over the overlap, ncc ≥ ``min_corr``: brightness, contrast and gamma changes
   barely move it, the smoothing absorbs noise and JPEG, look-alikes fall below.

A pair passes when 2–4 hold; with ``flips`` the mirrored b is tried as well. Cost on one
core: about 0.4 ms for a pair that passes at the shift, 2–3 ms for a pair that fails
(keypoints and the ECC refinements); bench/near_duplicates.py times the whole path per 10k
images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

DESCRIPTOR_THRESH = 0.6  # blurred-thumbnail cosine distance of a candidate pair (its rank matters more)
DESCRIPTOR_K = 5
ECC_FROM_NCC = 0.3  # ECC refines only starts at least this well aligned (bench/near_duplicates.py)
MIN_CORR = 0.95  # 1% of true pairs lie below 0.975 on the evaluation set, look-alikes reach 0.96
MIN_INLIERS = 8
SCALE_RANGE = (0.65, 1.55)
MAX_ANISOTROPY = 1.3
MAX_ROTATION_DEG = 10.0
MIN_OVERLAP = 0.8
SIZE = 128
_ECC_SIZE = 64
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)


def blurred_thumbnails(images: Sequence[np.ndarray]) -> np.ndarray:
    """The blurred-thumbnail descriptor b(x) (module docstring) of each H×W×3 uint8 image: [N, 192] float32."""
    out = np.empty((len(images), 192), np.float32)
    for i, img in enumerate(images):
        rgb = _as_rgb(img, f"image {i}")
        t = cv2.resize(cv2.GaussianBlur(cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32),
                                        (0, 0), 3.84), (8, 8), interpolation=cv2.INTER_AREA).reshape(-1)
        t -= t.mean()
        norm = np.linalg.norm(t)
        out[i] = t / norm if norm > 0 else t
    return out


def _as_rgb(image: np.ndarray, name: str) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ValueError(f"{name}: expected an H×W or H×W×{{1,3,4}} uint8 image, got {img.dtype} {img.shape}")
    if min(img.shape[:2]) < 8:
        raise ValueError(f"{name}: {img.shape[:2]} is too small (at least 8×8 pixels)")
    if img.ndim == 2 or img.shape[2] == 1:
        return np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


@dataclass(frozen=True)
class Match:
    """Verification of one pair: passed, and its evidence (ncc, overlap, σ₁ σ₂, rotation θ°, ORB inliers)."""

    passed: bool
    ncc: float
    overlap: float
    scale: tuple[float, float]
    rotation_deg: float
    inliers: int


class Prepared:
    """One image ready for verification: grey 128×128 and smoothed (σ = 1.5 px); its ORB keypoints
    and descriptors are detected on first use (most pairs pass or fail before they are needed)."""

    __slots__ = ("_features", "_orb", "grey", "smooth")

    def __init__(self, grey: np.ndarray, orb):
        self.grey = grey
        self.smooth = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.5)
        self._orb = orb
        self._features = None

    @property
    def features(self) -> tuple:
        if self._features is None:
            self._features = self._orb.detectAndCompute(self.grey, None)
        return self._features

    def mirrored(self) -> Prepared:
        return Prepared(cv2.flip(self.grey, 1), self._orb)


class Verifier:
    """Pairwise verification (module docstring). Create one per worker: holds the ORB detector."""

    def __init__(self, *, min_corr: float = MIN_CORR, flips: bool = False):
        if not -1.0 <= min_corr <= 1.0:
            raise ValueError(f"min_corr must be in [-1, 1], got {min_corr}")
        self.min_corr = min_corr
        self.flips = flips
        self._orb = cv2.ORB_create(nfeatures=400, scaleFactor=1.2, nlevels=4, edgeThreshold=15, patchSize=15,
                                   fastThreshold=8)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        self._window = cv2.createHanningWindow((SIZE, SIZE), cv2.CV_32F)  # no edge effects in the spectrum

    def prepare(self, image: np.ndarray, name: str = "image") -> Prepared:
        """One image made ready for every pair it is in (reuse it)."""
        grey = cv2.resize(cv2.cvtColor(_as_rgb(image, name), cv2.COLOR_RGB2GRAY), (SIZE, SIZE),
                          interpolation=cv2.INTER_AREA)
        return Prepared(grey, self._orb)

    def match(self, a: Prepared, b: Prepared) -> Match:
        """Verify prepared images a and b (from :meth:`prepare`)."""
        found = self._match(a, b)
        if self.flips and not found.passed:
            mirrored = self._match(a, b.mirrored())
            found = mirrored if mirrored.passed or mirrored.ncc > found.ncc else found
        return found

    def _shift_start(self, a: Prepared, b: Prepared) -> np.ndarray:
        """The phase-correlation shift a → b (2×3)."""
        (dx, dy), _ = cv2.phaseCorrelate(a.smooth, b.smooth, self._window)  # b(p) ≈ a(p − shift): a → b adds it
        return np.float32([[1, 0, dx], [0, 1, dy]])

    def _keypoint_start(self, a: Prepared, b: Prepared) -> tuple[np.ndarray | None, int]:
        """ORB + RANSAC similarity a → b (2×3) and its inliers; None without enough plausible inliers."""
        kp_a, des_a = a.features
        kp_b, des_b = b.features
        if des_a is None or des_b is None or len(kp_a) < 4 or len(kp_b) < 4:
            return None, 0
        pairs = self._matcher.match(des_a, des_b)
        if len(pairs) < MIN_INLIERS:
            return None, 0
        pa = np.float32([kp_a[m.queryIdx].pt for m in pairs])
        pb = np.float32([kp_b[m.trainIdx].pt for m in pairs])
        warp, inliers = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=3.0,
                                                    maxIters=1000)
        count = int(inliers.sum()) if inliers is not None else 0
        if warp is None or count < MIN_INLIERS or not _plausible(warp):
            return None, count
        return warp.astype(np.float32), count

    def _match(self, a: Prepared, b: Prepared) -> Match:
        """The cascade, cheapest first; the first map that passes wins, else the best correlation."""
        shift = self._shift_start(a, b)
        found = self._check(a, b, shift, 0)
        if found.passed:
            return found
        tried = [(shift, found)]
        warp, inliers = self._keypoint_start(a, b)
        if warp is not None:
            at_keypoints = self._check(a, b, warp, inliers)
            if at_keypoints.passed:
                return at_keypoints
            tried.insert(0, (warp, at_keypoints))
        best = max((f for _, f in tried), key=lambda f: f.ncc)
        for start, at_start in tried:
            if at_start.ncc < ECC_FROM_NCC:  # too far off for a local refinement to reach min_corr
                continue
            refined = self._check(a, b, self._ecc(a, b, start), inliers)
            if refined.passed:
                return refined
            best = refined if refined.ncc > best.ncc else best
        return best

    @staticmethod
    def _ecc(a: Prepared, b: Prepared, warp: np.ndarray) -> np.ndarray:
        """``warp`` refined by ECC on 64×64 images (the start when ECC does not converge)."""
        ratio = SIZE / _ECC_SIZE
        small = warp.copy()
        small[:, 2] /= ratio
        try:
            # ECC: template a, input b; the warp maps a's coordinates to b's
            _, small = cv2.findTransformECC(cv2.resize(a.smooth, (_ECC_SIZE, _ECC_SIZE), interpolation=cv2.INTER_AREA),
                                            cv2.resize(b.smooth, (_ECC_SIZE, _ECC_SIZE), interpolation=cv2.INTER_AREA),
                                            small, cv2.MOTION_AFFINE, _ECC_CRITERIA, None, 1)
        except cv2.error:
            return warp  # did not converge (flat or unrelated images)
        small[:, 2] *= ratio
        return small

    def _check(self, a: Prepared, b: Prepared, warp: np.ndarray, inliers: int) -> Match:
        """The plausibility, overlap and appearance checks of the map ``warp`` (a → b)."""
        linear = warp[:, :2].astype(np.float64)
        s = np.linalg.svd(linear, compute_uv=False)
        rotation = float(np.degrees(np.arctan2(linear[1, 0] - linear[0, 1], linear[0, 0] + linear[1, 1])))
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        warped = cv2.warpAffine(b.smooth, warp, (SIZE, SIZE), flags=flags, borderValue=-1.0)
        inside = cv2.warpAffine(np.ones((SIZE, SIZE), np.float32), warp, (SIZE, SIZE), flags=flags) > 0.999
        share_a = float(inside.mean())
        overlap = max(share_a, min(1.0, abs(float(np.linalg.det(linear))) * share_a))
        ncc = _ncc(a.smooth[inside], warped[inside]) if inside.sum() > 16 else -1.0
        passed = bool(_plausible(warp) and overlap >= MIN_OVERLAP and ncc >= self.min_corr)
        return Match(passed, ncc, overlap, (float(s[0]), float(s[1])), rotation, inliers)


def _plausible(warp: np.ndarray) -> bool:
    linear = np.asarray(warp, np.float64)[:, :2]
    s = np.linalg.svd(linear, compute_uv=False)
    rotation = np.degrees(np.arctan2(linear[1, 0] - linear[0, 1], linear[0, 0] + linear[1, 1]))
    return bool(np.linalg.det(linear) > 0 and SCALE_RANGE[0] <= s[1] and s[0] <= SCALE_RANGE[1]
                and s[0] / s[1] <= MAX_ANISOTROPY and abs(rotation) <= MAX_ROTATION_DEG)


def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else -1.0


def verify_pairs(images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray], *, min_corr: float = MIN_CORR,
                 flips: bool = False) -> list[Match]:
    """Verify the pairs (images_a[i], images_b[i]); each distinct image object is prepared once."""
    if len(images_a) != len(images_b):
        raise ValueError(f"{len(images_a)} first images but {len(images_b)} second images")
    verifier = Verifier(min_corr=min_corr, flips=flips)
    prepared: dict[int, tuple] = {}

    def prep(img: np.ndarray, name: str):
        key = id(img)
        if key not in prepared:
            prepared[key] = verifier.prepare(img, name)
        return prepared[key]

    return [verifier.match(prep(a, f"pair {i} first image"), prep(b, f"pair {i} second image"))
            for i, (a, b) in enumerate(zip(images_a, images_b))]
