"""Registering a dataset: find its images, read each once, and describe it as `samples` rows.

Sources:

* a folder in the class-per-subfolder layout, ``root/<label>/<image>``; when every
  top-level folder is a split name (train, test, val, validation),
  ``root/<split>/<label>/<image>``;
* a CSV or Parquet manifest with a ``uri`` column and optional ``label`` and
  ``split`` columns; other columns are kept as JSON in ``attributes``.

``sample_id`` is a hash of the dataset name and the file's URI, so re-ingesting the
same file gives the same id. A URI is listed once per dataset (a manifest that lists
one twice is refused, or with ``ingest.duplicate_uris: first`` the later rows become
`ingest_errors` rows), so two rows of one batch never share an id; a hash collision
with a different file already in the lake is refused by the ingest job.

Split names are checked against ``ingest.splits``: each canonical name with its
aliases, matched case-insensitively, stored as the canonical name. Default:
``train`` (alias ``training``), ``validation`` (``val``, ``valid``, ``dev``), ``test``
(``testing``); a manifest row or ``--split`` with another name is refused before
anything is written, naming the row.

Every file is read and decoded once, in a worker process, with the limits of
:mod:`brain.images` (regular files only, byte and pixel caps, a timeout): unreadable,
missing, oversized or non-image files and URIs the lake cannot open become
`ingest_errors` rows with the reason, and the rest of the dataset is ingested.
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
from brain.errors import plain_text
from brain.schemas import INGEST_ERRORS, SAMPLES

# canonical split name → its aliases (all matched case-insensitively); config: ingest.splits
SPLITS: dict[str, tuple[str, ...]] = {"train": ("training",), "validation": ("val", "valid", "dev"),
                                      "test": ("testing",)}


@dataclass(frozen=True)
class SourceFile:
    uri: str
    label: str | None = None
    split: str | None = None
    attributes: dict = field(default_factory=dict, hash=False)
    refused: str | None = None  # known bad before it is read (e.g. a repeated manifest row): the error's reason


def split_names(splits: dict[str, list[str]] | dict[str, tuple[str, ...]] | None = None) -> dict[str, str]:
    """Every accepted spelling (lower case) → its canonical split name."""
    names = {}
    for canonical, aliases in (SPLITS if splits is None else splits).items():
        for name in (canonical, *aliases):
            names[name.lower()] = canonical
    return names


def canonical_split(value: str | None, names: dict[str, str], *, where: str) -> str | None:
    """The canonical name of split ``value`` (None stays None); unknown names are an error saying ``where``."""
    if value is None:
        return None
    try:
        return names[str(value).strip().lower()]
    except KeyError:
        known = sorted(set(names.values()))
        raise ValueError(f"{where}: unknown split {value!r}; splits are {known} (aliases: "
                         f"{sorted(k for k, v in names.items() if k != v)}, any case; config: ingest.splits)") from None


def sample_id(dataset: str, uri: str) -> str:
    """Stable id of a file in a dataset: sha1 of ``dataset`` and ``uri``, 16 hex digits."""
    return hashlib.sha1(f"{dataset}\0{uri}".encode()).hexdigest()[:16]


def discover_folder(root: str | Path, *, split: str | None = None,
                    splits: dict[str, list[str]] | None = None) -> list[SourceFile]:
    """Every file under ``root`` with its label (and split) from the folder layout.

    Every entry is listed, FIFOs and devices too, so that reading refuses each with its reason;
    a name that is not valid UTF-8 is refused here (the lake's strings are UTF-8).
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"ingest source {root} is not a folder")
    names = split_names(splits)
    split = canonical_split(split, names, where="--split / ingest.split")
    top_dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    by_split = bool(top_dirs) and all(p.name.lower() in names for p in top_dirs)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        parts = Path(dirpath).relative_to(root).parts
        prefix = os.path.join(dirpath, "")  # joined as strings: a Path per file costs seconds a million files
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            file_split, label = split, None
            if by_split and parts:
                file_split, label = names[parts[0].lower()], (parts[1] if len(parts) > 1 else None)
            elif parts:
                label = parts[0]
            path = prefix + name
            try:
                path.encode("utf-8")
                found.append(SourceFile(path, label, file_split))
            except UnicodeEncodeError:
                printable = os.fsencode(path).decode("utf-8", "backslashreplace")
                found.append(SourceFile(printable, None, None, refused=f"{printable}: the file name is not valid "
                                        "UTF-8 (bytes shown as \\x..): rename it to ingest it"))
    return found


def read_manifest(path: str | Path, *, split: str | None = None, splits: dict[str, list[str]] | None = None,
                  duplicate_uris: str = "error") -> list[SourceFile]:
    """Rows of a CSV or Parquet manifest; relative URIs are taken from the manifest's folder.

    Refused before anything is read: an empty uri, an unknown split (see the module doc), and a
    uri listed twice, unless ``duplicate_uris="first"``: then the first row wins and each later
    one is returned ``refused`` (an `ingest_errors` row naming the row it repeats).
    """
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
    if duplicate_uris not in ("error", "first"):
        raise ValueError(f"duplicate_uris must be 'error' or 'first', got {duplicate_uris!r}")
    names = split_names(splits)
    split = canonical_split(split, names, where="--split / ingest.split")
    found, first_row = [], {}
    for i, row in enumerate(table.to_pylist()):
        where = f"manifest {path} row {i + 1}"  # 1-based data rows, as a spreadsheet shows them after the header
        uri = row.pop("uri")
        if uri is None or not str(uri).strip():
            raise ValueError(f"{where}: empty 'uri'")
        uri = str(uri).strip()
        if "://" not in uri:
            uri = os.path.normpath(uri if os.path.isabs(uri) else str(path.parent / uri))
        label = row.pop("label", None)
        row_split = canonical_split(row.pop("split", None), names, where=where) or split
        if uri in first_row:
            if duplicate_uris == "error":
                raise ValueError(f"{where}: uri {uri!r} is listed again (first at row {first_row[uri]}); each file "
                                 "may be listed once (or set ingest.duplicate_uris: first to keep the first row)")
            found.append(SourceFile(uri, refused=f"{uri}: {where} lists this uri again (first at row "
                                                 f"{first_row[uri]}): the first row was kept"))
            continue
        first_row[uri] = i + 1
        found.append(SourceFile(uri, None if label is None else str(label), row_split,
                                {k: v for k, v in row.items() if v is not None}))
    return found


def probe(files: Iterable[SourceFile], *, dataset: str, run_id: str,
          limits: images.DecodeLimits = images.DecodeLimits(), workers: int = 1,
          parallel_min: int = 1000) -> tuple[pa.Table, pa.Table]:
    """Read and decode each file once (:func:`brain.images.load_isolated`): (`samples` rows, `ingest_errors` rows).

    The width and height are the file's own (before any reduction at decode). From ``parallel_min``
    files on, ``workers`` decode processes share them (reading, hashing and decoding grow with N;
    below that, starting the processes costs more than it saves).
    """
    now = dt.datetime.now(dt.timezone.utc)
    files = list(files)
    to_read = [f for f in files if f.refused is None]
    ids = [sample_id(dataset, f.uri) for f in to_read]
    if len(set(ids)) != len(ids):
        raise ValueError(f"dataset {dataset!r}: a file is listed twice ({len(ids) - len(set(ids))} repeated uris)")
    results = images.load_isolated([f.uri for f in to_read], limits=limits, pixels=False,
                                   workers=workers if len(to_read) >= parallel_min else 1)
    samples, errors = [], [dict(run_id=run_id, dataset=dataset, uri=f.uri, stage="ingest", reason=plain_text(f.refused),
                                recorded_at=now) for f in files if f.refused is not None]
    for f, sid, found in zip(to_read, ids, results):
        if isinstance(found, images.ImageError):
            errors.append(dict(run_id=run_id, dataset=dataset, uri=f.uri, stage="ingest",
                               reason=plain_text(str(found)), recorded_at=now))
            continue
        samples.append(dict(
            sample_id=sid, dataset=dataset, uri=f.uri, split=f.split, label=f.label,
            width=found.width, height=found.height, content_hash=found.sha256, size_bytes=found.size_bytes,
            attributes=json.dumps(f.attributes, default=str) if f.attributes else None, ingested_at=now))
    return (pa.Table.from_pylist(samples, schema=SAMPLES), pa.Table.from_pylist(errors, schema=INGEST_ERRORS))


def source_files(cfg) -> list[SourceFile]:
    """The files an ``ingest`` config section names (its folder or its manifest), split names checked."""
    if bool(cfg.source) == bool(cfg.manifest):
        raise ValueError("ingest needs exactly one of ingest.source (a folder) or ingest.manifest (a file)")
    if cfg.source:
        return discover_folder(cfg.source, split=cfg.split, splits=cfg.splits)
    return read_manifest(cfg.manifest, split=cfg.split, splits=cfg.splits, duplicate_uris=cfg.duplicate_uris)


def check_new_ids(known: pa.Table, samples: pa.Table) -> None:
    """Refuse new `samples` rows whose id the lake already gives another file (``known``: sample_id, uri)."""
    uri_of = dict(zip(known["sample_id"].to_pylist(), known["uri"].to_pylist()))
    for sid, uri in zip(samples["sample_id"].to_pylist(), samples["uri"].to_pylist()):
        if uri_of.get(sid, uri) != uri:
            raise ValueError(f"sample id {sid} of {uri!r} is already the id of {uri_of[sid]!r} in this dataset "
                             "(a hash collision): nothing was written; rename one of the files")

