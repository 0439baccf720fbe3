"""The lake: one Delta table per kind of result, written with ``deltalake``.

Two ways to write:

* :meth:`Lake.append` / :meth:`Lake.upsert` for small tables written by the
  driver (samples, runs, errors);
* engines (Ray Data tasks, Spark executors) write Parquet files under
  :meth:`Lake.staging_dir` inside the table folder, and the driver commits them
  in one Delta transaction with :meth:`Lake.commit_files`. Files not in the Delta
  log are invisible to every reader, so a job that dies before its commit leaves
  no partial rows behind.

Readers: :meth:`Lake.read` (Arrow), :meth:`Lake.dataset` (a lazy
``pyarrow.dataset``), and :meth:`Lake.file_uris` for engines that read the
committed Parquet files themselves (Spark has no Delta jars here). These read
every run's rows; :mod:`brain.runs` resolves which runs are current.

A lake on object storage (``s3://bucket/prefix``) is reached with delta-rs storage options
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ALLOW_HTTP``...): given by the config's ``storage.options`` (:meth:`Lake.from_conf`), else
taken from the same-named environment variables. Every byte the lake reads or writes outside
delta-rs goes through one ``pyarrow.fs`` filesystem built from the same options (staging,
heartbeats, artifacts), so a ``Lake`` pickled into a Ray task or a Spark closure reaches the
store with them.

Many processes write one lake at once. Appends never conflict in Delta; a commit
that does (a MERGE into `samples`, a DELETE by vacuum) is retried with backoff
up to ``commit_retries`` times, and :class:`LakeConflictError` says so if it gives up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import random
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, Field, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction

from brain.schemas import PATCH_COLUMNS, schema_of

log = logging.getLogger(__name__)

STAGING_FOLDER = "_staging"
HEARTBEATS_FOLDER = "_heartbeats"
ARTIFACTS_FOLDER = "_artifacts"
PLOTS_FOLDER = "plots"  # `brain plot`'s default output: plots/<brain key>.html and .png
COMMIT_RETRIES = 12  # attempts of a conflicting commit before LakeConflictError


class SchemaMismatchError(ValueError):
    """Files or rows whose columns do not match the table's schema."""


class LakeConflictError(RuntimeError):
    """Concurrent writers kept conflicting with a commit after every retry."""


def _is_conflict(err: Exception) -> bool:
    if isinstance(err, CommitFailedError):
        return True
    text = str(err).lower()
    return isinstance(err, DeltaError) and any(
        word in text for word in ("conflict", "concurrent", "already exists", "version mismatch"))


def with_retries(action, what: str, *, attempts: int = COMMIT_RETRIES):
    """Call ``action()``; on a Delta commit conflict, back off (jittered, doubling) and call it again."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (CommitFailedError, DeltaError) as err:
            if not _is_conflict(err):
                raise
            if attempt == attempts:
                raise LakeConflictError(
                    f"{what}: gave up after {attempts} attempts, each conflicting with a concurrent "
                    f"writer ({err}); run it again") from None
            delay = min(2.0, 0.02 * 2 ** attempt) * (0.5 + random.random())
            log.info("%s: commit conflict (%s), retrying in %.2f s", what, err, delay)
            time.sleep(delay)


# The delta-rs storage options of an S3 store that also configure pyarrow's S3FileSystem, and the
# environment variables a lake falls back to (delta-rs reads the same names from the environment).
S3_ENV_OPTIONS = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                  "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ALLOW_HTTP", "AWS_CONDITIONAL_PUT",
                  "AWS_S3_ALLOW_UNSAFE_RENAME", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST")


def storage_options_from_env(uri: str) -> dict[str, str] | None:
    """The ``AWS_*`` variables of this process's environment for an ``s3://`` lake (None for other lakes)."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    return {name: os.environ[name] for name in S3_ENV_OPTIONS if os.environ.get(name)} or None


def s3_filesystem(options: dict[str, str]) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem configured like delta-rs by the same ``options`` (keys upper case)."""
    endpoint = options.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if not parts.netloc:
            raise ValueError(f"storage option AWS_ENDPOINT_URL={endpoint!r} is not a URL like http://host:port")
        # delta-rs refuses plain http unless told, with an error that does not name the option
        if parts.scheme == "http" and options.get("AWS_ALLOW_HTTP", "").lower() != "true":
            raise ValueError(f"storage option AWS_ENDPOINT_URL={endpoint!r} is plain http: set AWS_ALLOW_HTTP "
                             "to \"true\" as well (storage.options or the environment)")
        kwargs.update(endpoint_override=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme)
    region = options.get("AWS_REGION") or options.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if options.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(access_key=options["AWS_ACCESS_KEY_ID"], secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
                      session_token=options.get("AWS_SESSION_TOKEN"))
    if options.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "").lower() == "true":
        kwargs["force_virtual_addressing"] = True
    return pafs.S3FileSystem(**kwargs)


class Lake:
    """A lake rooted at ``uri``: a local folder, ``s3://bucket/prefix``, or any URI pyarrow and delta-rs read.

    ``storage_options`` are delta-rs's (upper-case names such as ``AWS_ENDPOINT_URL``); None takes an
    S3 lake's from the ``AWS_*`` environment variables. A lake pickles with its options and filesystem,
    so engines' workers get it whole.
    """

    def __init__(self, uri: str | Path, *, storage_options: dict[str, str] | None = None):
        uri = str(uri)
        if "://" not in uri:
            uri = str(Path(uri).expanduser().resolve())
        self.uri = uri.rstrip("/")
        if storage_options is None:
            storage_options = storage_options_from_env(self.uri)
        self.storage_options = {k.upper(): str(v) for k, v in storage_options.items()} if storage_options else None
        if self.uri.startswith(("s3://", "s3a://")):
            parts = urlsplit(self.uri)
            self._fs, self._root = s3_filesystem(self.storage_options or {}), parts.netloc + parts.path
        else:
            self._fs, self._root = pafs.FileSystem.from_uri(self.uri if "://" in self.uri else Path(self.uri).as_uri())

    @classmethod
    def from_conf(cls, conf) -> "Lake":
        """The lake a config names (``conf.lake``), reached with its ``storage.options``."""
        return cls(conf.lake, storage_options=conf.storage.options or None)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    @property
    def is_local(self) -> bool:
        """Whether the lake is a folder of this machine's file system (engines may then use its paths)."""
        return isinstance(self._fs, pafs.LocalFileSystem)

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._fs

    def path_of(self, uri: str) -> str:
        """A URI under the lake (as ``file_uris`` lists them) as a path in :attr:`filesystem`."""
        if uri.startswith(self.uri + "/"):
            return self._root + uri[len(self.uri):]
        if uri.startswith("file://"):
            return urlsplit(uri).path
        if "://" in uri:
            raise ValueError(f"{uri} is not a file of lake {self.uri}")
        return uri

    def files_dataset(self, uris: list[str], *, schema: pa.Schema | None = None) -> pads.Dataset:
        """Parquet files of the lake (URIs as ``file_uris`` lists them) as one dataset read through the lake's filesystem."""
        return pads.dataset([self.path_of(u) for u in uris], schema=schema, format="parquet", filesystem=self._fs)

    def local_folder(self, name: str) -> Path:
        """A folder of this machine for files made next to the lake for local use (the demo's images, plots).

        Under the lake when it is a local folder; for a lake elsewhere, under ``~/.cache/lakebrain/`` in a
        folder named after the lake (image files must be where the image readers open them).
        """
        if self.is_local:
            return Path(self._root) / name
        digest = hashlib.sha1(self.uri.encode()).hexdigest()[:12]
        return Path.home() / ".cache" / "lakebrain" / f"lake-{digest}" / name

    def write_file(self, relative: str, data: bytes) -> str:
        """Write a file under the lake (a plot, a report), complete or not at all; returns its URI."""
        path = f"{self._root}/{relative}"
        self._fs.create_dir(posixpath.dirname(path), recursive=True)
        tmp = f"{posixpath.dirname(path)}/.{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp"
        with self._fs.open_output_stream(tmp) as out:
            out.write(data)
        self._fs.move(tmp, path)
        return f"{self.uri}/{relative}"

    # -- paths ---------------------------------------------------------------
    def table_uri(self, table: str) -> str:
        schema_of(table)
        return f"{self.uri}/{table}"

    def _table_path(self, table: str) -> str:
        return f"{self._root}/{table}"

    def artifact_dir(self, run_id: str) -> str:
        """Folder for a run's non-tabular outputs (index files, fitted models)."""
        return f"{self.uri}/{ARTIFACTS_FOLDER}/{run_id}"

    def write_artifact(self, run_id: str, name: str, data: bytes) -> str:
        """Save a run's file (written to a temporary name, then renamed); returns its URI."""
        base = f"{self._root}/{ARTIFACTS_FOLDER}/{run_id}"
        self._fs.create_dir(base, recursive=True)
        with self._fs.open_output_stream(f"{base}/.{name}.tmp") as out:
            out.write(data)
        self._fs.move(f"{base}/.{name}.tmp", f"{base}/{name}")
        return f"{self.artifact_dir(run_id)}/{name}"

    def read_artifact(self, run_id: str, name: str) -> bytes:
        with self._fs.open_input_stream(f"{self._root}/{ARTIFACTS_FOLDER}/{run_id}/{name}") as stream:
            return stream.read()

    def staging_dir(self, table: str, run_id: str) -> str:
        """Where engines write a run's Parquet files before they are committed."""
        return f"{self.table_uri(table)}/{STAGING_FOLDER}/{run_id}"

    # -- tables --------------------------------------------------------------
    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.table_uri(table), storage_options=self.storage_options)

    def existing_table(self, table: str) -> DeltaTable | None:
        """The Delta table, or None where it does not exist (a reader never creates tables): one read of its log."""
        try:
            return DeltaTable(self.table_uri(table), storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def table(self, table: str) -> DeltaTable:
        """The Delta table, created empty with its schema on first use."""
        uri = self.table_uri(table)
        if not self.exists(table):
            try:
                DeltaTable.create(uri, schema_of(table), mode="ignore", name=table,
                                  storage_options=self.storage_options)
            except (CommitFailedError, DeltaError):
                if not self.exists(table):  # another writer created it first: that is fine
                    raise
        return DeltaTable(uri, storage_options=self.storage_options)

    def version(self, table: str) -> int:
        return self.table(table).version()

    def dataset(self, table: str, *, version: int | None = None) -> pads.Dataset:
        """``table``'s committed rows as a lazy Arrow dataset read through Arrow's own filesystem.

        Not through deltalake's default, a ``PyFileSystem`` whose every read calls back into
        Python: a reader that stops early (DuckDB's LIMIT, a join that ends) leaves Arrow I/O
        threads with read-ahead in flight; at interpreter exit such a thread blocks on the GIL,
        Python ends it with ``pthread_exit``, and the forced unwind through deltalake's Rust and
        Arrow's C++ frames aborts the process ("terminate called without an active exception",
        exit 134), segfaults, or hangs Arrow's pool shutdown. Native reads never need the GIL.
        """
        delta = self.table(table)
        if version is not None:
            delta.load_as_version(version)
        return delta.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(self._table_path(table), self._fs))

    def read(self, table: str, *, columns: list[str] | None = None,
             filter: pads.Expression | None = None) -> pa.Table:
        """Rows of ``table`` as Arrow with the lake schema's types."""
        data = self.dataset(table).to_table(columns=columns, filter=filter)
        schema = schema_of(table)
        target = pa.schema([schema.field(name) for name in data.column_names])
        return data.cast(target)

    def file_uris(self, table: str) -> list[str]:
        return self.table(table).file_uris()

    # -- writes --------------------------------------------------------------
    def _conform(self, table: str, rows: pa.Table) -> pa.Table:
        schema = schema_of(table)
        rows = _with_patch_columns(rows, schema)
        missing = set(schema.names) - set(rows.column_names)
        extra = set(rows.column_names) - set(schema.names)
        if missing or extra:
            raise SchemaMismatchError(
                f"rows for table {table!r} do not match its schema: missing columns {sorted(missing)}, "
                f"unknown columns {sorted(extra)}")
        return rows.select(schema.names).cast(schema)

    def append(self, table: str, rows: pa.Table) -> int:
        """Append rows in one commit; returns the new table version."""
        rows = self._conform(table, rows)

        def append() -> int:
            dt = self.table(table)
            # schema_mode="merge": a lake written before a column was added to the schema gains it
            write_deltalake(dt, rows, mode="append", schema_mode="merge")
            return dt.version()
        return with_retries(append, f"append to {table}")

    def upsert(self, table: str, rows: pa.Table, *, key: str) -> int:
        """Insert new rows and replace those whose ``key`` already exists, in one commit."""
        rows = self._conform(table, rows)

        def merge() -> int:
            dt = self.table(table)
            (dt.merge(rows, predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t", merge_schema=True)
               .when_matched_update_all().when_not_matched_insert_all().execute())
            return dt.version()
        return with_retries(merge, f"upsert into {table}")

    def delete_where(self, table: str, predicate: str) -> int:
        """Delete the rows matching a SQL ``predicate``; returns how many."""
        if not self.exists(table):
            return 0
        metrics = with_retries(lambda: self.table(table).delete(predicate), f"delete from {table}")
        return int(metrics.get("num_deleted_rows", 0) or 0)

    def staged_files(self, table: str, run_id: str) -> list[str]:
        """Parquet files engines left in the run's staging folder (paths relative to the table)."""
        base = f"{self._table_path(table)}/{STAGING_FOLDER}/{run_id}"
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        files = [info.path for info in self._fs.get_file_info(selector)
                 if info.type == pafs.FileType.File and info.path.endswith(".parquet")
                 and not posixpath.basename(info.path).startswith((".", "_"))]
        prefix = self._table_path(table) + "/"
        return sorted(f[len(prefix):] for f in files)

    def commit_files(self, table: str, run_id: str) -> int:
        """Commit the run's staged Parquet files to ``table`` in one Delta transaction.

        Every file's schema is checked against the table's first, so a file with a
        wrong column or type is refused with its name before anything is committed.
        Returns the number of rows committed.
        """
        schema = schema_of(table)
        actions, total = [], 0
        for rel in self.staged_files(table, run_id):
            full = f"{self._table_path(table)}/{rel}"
            meta = pq.read_metadata(full, filesystem=self._fs)
            _check_file_schema(table, rel, meta.schema.to_arrow_schema(), schema)
            info = self._fs.get_file_info(full)
            actions.append(AddAction(
                path=rel, size=info.size, partition_values={},
                modification_time=int(info.mtime.timestamp() * 1000) if info.mtime else int(time.time() * 1000),
                data_change=True, stats=json.dumps({"numRecords": meta.num_rows})))
            total += meta.num_rows
        if actions:
            self._add_new_columns(table)
            with_retries(lambda: self.table(table).create_write_transaction(actions, mode="append", schema=schema),
                         f"commit of run {run_id}'s files to {table}")
        log.info("committed %d rows in %d files to %s", total, len(actions), table)
        return total

    def _add_new_columns(self, table: str) -> None:
        """Columns the lake schema gained since ``table`` was created, added to its Delta schema (null in old
        files): a file transaction does not change the table's schema by itself."""
        def add() -> None:
            delta = self.table(table)
            have = set(delta.schema().to_arrow().names)
            new = [Field.from_arrow(field) for field in schema_of(table) if field.name not in have]
            if new:  # looked up again on a retry: a concurrent writer may have added them
                delta.alter.add_columns(new)
        with_retries(add, f"adding new columns to {table}")

    def uncommitted_staged(self, table: str, run_id: str) -> tuple[list[str], bool]:
        """The run's staged files that the table's current version does not reference, and whether
        any of its staged files is referenced (then its staging folder holds committed rows)."""
        staged = self.staged_files(table, run_id)
        if not staged:
            return [], False
        committed = {uri[len(self.table_uri(table)) + 1:] for uri in self.file_uris(table)} if self.exists(table) else set()
        return [rel for rel in staged if rel not in committed], bool(committed.intersection(staged))

    def discard_staged(self, table: str, run_id: str) -> None:
        """Remove a run's staged files that the table's current version does not reference."""
        uncommitted, any_committed = self.uncommitted_staged(table, run_id)
        if not uncommitted:
            return
        for rel in uncommitted:
            try:
                self._fs.delete_file(f"{self._table_path(table)}/{rel}")
            except FileNotFoundError:  # another process discarded it first
                pass
        if not any_committed:
            self.remove_staging(table, run_id)

    def read_staged(self, table: str, run_id: str, *, columns: list[str] | None = None) -> pa.Table:
        """The rows in the run's staged files for ``table``, not yet committed."""
        files = [f"{self._table_path(table)}/{rel}" for rel in self.staged_files(table, run_id)]
        schema = schema_of(table)
        if not files:
            return schema.empty_table().select(columns or schema.names)
        return pads.dataset(files, schema=schema, format="parquet", filesystem=self._fs).to_table(columns=columns)

    def staged_rows(self, table: str, run_id: str) -> int:
        """Rows in the run's staged files for ``table`` (from the Parquet footers)."""
        return sum(pq.read_metadata(f"{self._table_path(table)}/{rel}", filesystem=self._fs).num_rows
                   for rel in self.staged_files(table, run_id))

    def stage(self, table: str, run_id: str, rows: pa.Table, *, name: str | None = None) -> None:
        """Write rows as one uncommitted Parquet file of the run (safe from many workers at once).

        ``name`` gives the file a deterministic name (``NAME.parquet``, replaced if present, written
        under a temporary name and renamed, so it exists only complete): resumable jobs name files by shard.
        """
        base = f"{self._table_path(table)}/{STAGING_FOLDER}/{run_id}"
        self._fs.create_dir(base, recursive=True)
        if name is None:
            pq.write_table(self._conform(table, rows), f"{base}/part-{uuid.uuid4().hex}.parquet", filesystem=self._fs)
            return
        tmp = f"{base}/.{name}-{uuid.uuid4().hex}.tmp"
        pq.write_table(self._conform(table, rows), tmp, filesystem=self._fs)
        self._fs.move(tmp, f"{base}/{name}.parquet")

    def staged_runs(self, table: str) -> list[str]:
        """Run ids with a staging folder in ``table``."""
        selector = pafs.FileSelector(f"{self._table_path(table)}/{STAGING_FOLDER}", allow_not_found=True)
        return [posixpath.basename(info.path) for info in self._fs.get_file_info(selector) if info.type == pafs.FileType.Directory]

    def remove_staging(self, table: str, run_id: str) -> None:
        """Delete a run's staging folder, committed files included: only for runs whose rows were purged."""
        try:
            self._fs.delete_dir(f"{self._table_path(table)}/{STAGING_FOLDER}/{run_id}")
        except FileNotFoundError:
            pass

    # -- liveness --------------------------------------------------------------
    def beat(self, run_id: str) -> None:
        """Record that ``run_id``'s process is alive (a small file rewritten in place)."""
        base = f"{self._root}/{HEARTBEATS_FOLDER}"
        self._fs.create_dir(base, recursive=True)
        with self._fs.open_output_stream(f"{base}/{run_id}") as out:
            out.write(str(time.time()).encode())

    def last_beat(self, run_id: str) -> float | None:
        """Seconds since the epoch of ``run_id``'s last heartbeat; None if it has none."""
        try:
            with self._fs.open_input_stream(f"{self._root}/{HEARTBEATS_FOLDER}/{run_id}") as stream:
                return float(stream.read().decode() or 0)
        except (FileNotFoundError, ValueError):
            return None

    def forget_beat(self, run_id: str) -> None:
        try:
            self._fs.delete_file(f"{self._root}/{HEARTBEATS_FOLDER}/{run_id}")
        except FileNotFoundError:
            pass

    def delete_artifacts(self, run_id: str) -> None:
        path = f"{self._root}/{ARTIFACTS_FOLDER}/{run_id}"
        try:
            self._fs.delete_dir(path)
        except FileNotFoundError:
            pass

    # -- what lies in the lake's own folders (for `brain lake cleanup`) ----------------------------------
    def _names_in(self, folder: str, kind: pafs.FileType) -> list[str]:
        selector = pafs.FileSelector(f"{self._root}/{folder}", allow_not_found=True)
        return sorted(Path(info.path).name for info in self._fs.get_file_info(selector) if info.type == kind)

    def heartbeat_runs(self) -> list[str]:
        """Run ids that have a heartbeat file."""
        return [name for name in self._names_in(HEARTBEATS_FOLDER, pafs.FileType.File) if not name.startswith(".")]

    def artifact_runs(self) -> list[str]:
        """Run ids that have an artifact folder."""
        return self._names_in(ARTIFACTS_FOLDER, pafs.FileType.Directory)

    def plot_files(self) -> list[str]:
        """File names in the lake's plots folder."""
        return self._names_in(PLOTS_FOLDER, pafs.FileType.File)

    def delete_plot(self, name: str) -> None:
        try:
            self._fs.delete_file(f"{self._root}/{PLOTS_FOLDER}/{name}")
        except FileNotFoundError:
            pass


def plain_strings(table: pa.Table) -> pa.Table:
    """Cast delta-rs's string_view columns to plain strings, which every Arrow kernel supports."""
    fields = [pa.field(f.name, pa.string()) if pa.types.is_string_view(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def _with_patch_columns(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Whole-image rows may leave out the patch columns (brain.schemas.PATCH_COLUMNS): added as nulls."""
    for name in sorted(PATCH_COLUMNS & set(schema.names) - set(rows.column_names)):
        rows = rows.append_column(schema.field(name), pa.nulls(rows.num_rows, schema.field(name).type))
    return rows


def _check_file_schema(table: str, name: str, found: pa.Schema, expected: pa.Schema) -> None:
    found_types = {f.name: f.type for f in found}
    problems = []
    for field in expected:
        if field.name not in found_types:
            problems.append(f"missing column {field.name!r}")
        elif not _same_type(found_types[field.name], field.type):
            problems.append(f"column {field.name!r} is {found_types[field.name]}, expected {field.type}")
    extra = set(found_types) - set(expected.names)
    if extra:
        problems.append(f"unknown columns {sorted(extra)}")
    if problems:
        raise SchemaMismatchError(f"file {name} for table {table!r}: " + "; ".join(problems))


def _same_type(found: pa.DataType, expected: pa.DataType) -> bool:
    # Parquet has no separate large/view string types and names list items freely.
    def norm(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return pa.string()
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pa.list_(norm(t.value_type))
        if pa.types.is_timestamp(t):
            return pa.timestamp("us", tz="UTC")
        return t
    return norm(found) == norm(expected)
