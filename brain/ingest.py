"""Registering a dataset: find its images, read each once, and describe it as `samples` rows.

Sources:

* a folder in the class-per-subfolder layout, ``root/<label>/<image>``; when every
  top-level folder is a split name (train, test, val, validation),
  ``root/<split>/<label>/<image>``;
* a CSV or Parquet manifest with a ``uri`` column and optional ``label`` and
  ``split`` columns; other columns are kept as JSON in ``attributes``.

``sample_id`` is a hash of the dataset name and the file's URI, so re-ingesting the
same file gives the same id. Every file is read and decoded once: unreadable,
missing or non-image files become `ingest_errors` rows with the reason, and the
rest of the dataset is ingested.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from brain import images
from brain.schemas import INGEST_ERRORS, SAMPLES

SPLIT_NAMES = {"train", "test", "val", "validation"}


@dataclass(frozen=True)
class SourceFile:
    uri: str
    label: str | None = None
    split: str | None = None
    attributes: dict = field(default_factory=dict, hash=False)


def sample_id(dataset: str, uri: str) -> str:
    """Stable id of a file in a dataset: sha1 of ``dataset`` and ``uri``, 16 hex digits."""
    return hashlib.sha1(f"{dataset}\0{uri}".encode()).hexdigest()[:16]


def discover_folder(root: str | Path, *, split: str | None = None) -> list[SourceFile]:
    """Every file under ``root`` with its label (and split) from the folder layout."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"ingest source {root} is not a folder")
    top_dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    by_split = bool(top_dirs) and all(p.name.lower() in SPLIT_NAMES for p in top_dirs)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        parts = Path(dirpath).relative_to(root).parts
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            file_split, label = split, None
            if by_split and parts:
                file_split, label = parts[0], (parts[1] if len(parts) > 1 else None)
            elif parts:
                label = parts[0]
            found.append(SourceFile(str(Path(dirpath) / name), label, file_split))
    return found


def read_manifest(path: str | Path, *, split: str | None = None) -> list[SourceFile]:
    """Rows of a CSV or Parquet manifest; relative URIs are taken from the manifest's folder."""
    path = Path(path).expanduser().resolve()
    if path.suffix.lower() == ".parquet":
        table = pq.read_table(path)
    elif path.suffix.lower() in {".csv", ".tsv"}:
        table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter="\t" if path.suffix == ".tsv" else ","),
                               convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    else:
        raise ValueError(f"manifest {path} must be .csv, .tsv or .parquet")
    if "uri" not in table.column_names:
        raise ValueError(f"manifest {path} has no 'uri' column (columns: {table.column_names})")
    found = []
    for i, row in enumerate(table.to_pylist()):
        uri = row.pop("uri")
        if not uri:
            raise ValueError(f"manifest {path} row {i}: empty 'uri'")
        uri = str(uri)
        if "://" not in uri and not os.path.isabs(uri):
            uri = str((path.parent / uri).resolve())
        label = row.pop("label", None)
        row_split = row.pop("split", None) or split
        found.append(SourceFile(uri, None if label is None else str(label), row_split,
                                {k: v for k, v in row.items() if v is not None}))
    return found


def probe(files: Iterable[SourceFile], *, dataset: str, run_id: str) -> tuple[pa.Table, pa.Table]:
    """Read and decode each file once: (`samples` rows, `ingest_errors` rows)."""
    now = dt.datetime.now(dt.timezone.utc)
    samples, errors = [], []
    for f in files:
        try:
            data = images.read_bytes(f.uri)
            pixels = images.decode(data, uri=f.uri)
        except images.ImageError as err:
            errors.append(dict(run_id=run_id, dataset=dataset, uri=f.uri, stage="ingest",
                               reason=str(err), recorded_at=now))
            continue
        samples.append(dict(
            sample_id=sample_id(dataset, f.uri), dataset=dataset, uri=f.uri, split=f.split, label=f.label,
            width=pixels.shape[1], height=pixels.shape[0], content_hash=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data), attributes=json.dumps(f.attributes, default=str) if f.attributes else None,
            ingested_at=now))
    return (pa.Table.from_pylist(samples, schema=SAMPLES), pa.Table.from_pylist(errors, schema=INGEST_ERRORS))
