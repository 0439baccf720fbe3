"""Object patches: one row per box of a detections column, for per-object embeddings.

A detections column holds, per sample, a list of ``{label, bbox, confidence}``
with ``bbox = [x, y, w, h]`` relative to the image (as in ``predictions.detections``).
Ground-truth boxes carry no confidence (taken as 1). A patch is the crop of pixels
``[floor(x·W), ceil((x+w)·W)) × [floor(y·H), ceil((y+h)·H))`` clipped to the image
(at least one pixel); ``patch_index`` is the box's position in the sample's list, so
``(sample_id, patch_index)`` points back at the box it came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def crop(img: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
    """The patch of an H×W×3 image under a relative [x, y, w, h] box (formula above)."""
    h, w = img.shape[:2]
    x, y, bw, bh = (float(v) for v in bbox)
    x0, y0 = min(max(int(np.floor(x * w)), 0), w - 1), min(max(int(np.floor(y * h)), 0), h - 1)
    x1, y1 = max(min(int(np.ceil((x + bw) * w)), w), x0 + 1), max(min(int(np.ceil((y + bh) * h)), h), y0 + 1)
    return img[y0:y1, x0:x1]


def patches_from_detections(sample_ids: Sequence[str], detections: Sequence[Sequence[dict] | None], *,
                            min_confidence: float = 0.0) -> pa.Table:
    """Explode per-sample box lists into rows: sample_id, patch_index, label, bbox (float32 ×4)."""
    if len(sample_ids) != len(detections):
        raise ValueError(f"{len(sample_ids)} sample ids but {len(detections)} detection lists")
    rows = {"sample_id": [], "patch_index": [], "label": [], "bbox": []}
    for sample_id, dets in zip(sample_ids, detections):
        for i, det in enumerate(dets or []):
            bbox = det.get("bbox") if isinstance(det, dict) else None
            if bbox is None or len(bbox) != 4:
                raise ValueError(f"sample {sample_id}: box {i} must have a bbox [x, y, w, h], got {det!r}")
            x, y, w, h = (float(v) for v in bbox)
            if not (0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 and 0 < h <= 1):
                raise ValueError(f"sample {sample_id}: box {i} bbox {list(bbox)} is not [x, y, w, h] relative "
                                 f"to the image (x, y in [0, 1], w, h in (0, 1])")
            confidence = det.get("confidence")
            if (1.0 if confidence is None else float(confidence)) < min_confidence:
                continue
            rows["sample_id"].append(sample_id)
            rows["patch_index"].append(i)
            rows["label"].append(det.get("label"))
            rows["bbox"].append([x, y, w, h])
    return pa.table({"sample_id": pa.array(rows["sample_id"], pa.string()),
                     "patch_index": pa.array(rows["patch_index"], pa.int32()),
                     "label": pa.array(rows["label"], pa.string()),
                     "bbox": pa.array(rows["bbox"], pa.list_(pa.float32()))})


def detections_from_attributes(attributes: Sequence[str | None], field: str) -> list[list[dict] | None]:
    """The ``field`` of each sample's attributes JSON (a list of boxes, or a JSON string of one)."""
    out = []
    for text in attributes:
        value = json.loads(text).get(field) if text else None
        out.append(json.loads(value) if isinstance(value, str) else value)
    return out
