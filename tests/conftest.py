"""Shared fixtures: small real image folders, a lake in a temp folder, one Ray and one Spark per session.

Test tiers are markers (registered in pyproject.toml): ``integration`` (real local Ray and Spark),
``cluster`` (starts local clusters and submits to them), ``stress`` (repeats commands many times;
deselected unless asked for with ``-m stress``); every other test is ``unit`` (no engine).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pyarrow as pa
from PIL import Image

from brain import runs
from brain.config import Conf, IngestConf, SparkConf
from brain.lake import Lake
from brain.schemas import EMBEDDINGS, SAMPLES

ROOT = Path(__file__).resolve().parent.parent

# Jobs join the engines `brain engines up` recorded (jobs.engines.state_file): the tests' jobs start their
# own, or join what a test brings up itself, never a developer's engines.
os.environ["LAKEBRAIN_STATE_DIR"] = tempfile.mkdtemp(prefix="lakebrain-test-state-")


def write_image_folder(root: Path, *, per_class: int = 12, classes=("cat", "dog", "fish"), size: int = 24,
                       seed: int = 0) -> list[Path]:
    """Class-per-subfolder PNGs: each class a colour theme, each image its own random texture."""
    rng = np.random.default_rng(seed)
    paths = []
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.zeros(3)
        base[c % 3] = 160
        for i in range(per_class):
            noise = rng.normal(0, 45, size=(size, size, 3))
            img = np.clip(base + 40 + noise, 0, 255).astype(np.uint8)
            path = folder / f"{name}-{i:03d}.png"
            Image.fromarray(img).save(path)
            paths.append(path)
    return paths


def add_bad_files(root: Path) -> dict[str, Path]:
    """A corrupt PNG, a text file and an exact duplicate of an existing image."""
    first = sorted((root / "cat").glob("*.png"))[0]
    corrupt = root / "cat" / "corrupt.png"
    corrupt.write_bytes(first.read_bytes()[:60])  # a PNG header and nothing decodable
    text = root / "dog" / "notes.txt"
    text.write_text("not an image\n")
    dup = root / "fish" / "copy-of-cat.png"
    shutil.copyfile(first, dup)
    return {"corrupt": corrupt, "text": text, "duplicate": dup, "original": first}


ENGINE_TIERS = ("integration", "cluster", "stress")


def pytest_collection_modifyitems(items):
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in ENGINE_TIERS):
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_image_folder(root)
    return root


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path / "lake")


def local_conf(lake_path: str | Path, **sections) -> Conf:
    """The embedded default's settings against a test lake."""
    conf = Conf(lake=str(lake_path), dataset="pets",
                spark=SparkConf(master="local[2]", conf={
                    "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                    "spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"}))
    conf.ray.num_cpus = 2
    for name, value in sections.items():
        setattr(conf, name, value)
    return conf


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session."""
    import ray

    from jobs.engines import ray_init

    ray_init(local_conf("unused"))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test session."""
    from jobs.engines import spark_session

    session = spark_session(local_conf("unused"))
    yield session
    session.stop()


@dataclass(frozen=True)
class SmallPipeline:
    """ingest → embeddings → kNN → uniqueness over 45 pet images plus bad files (see ``small_pipeline``)."""

    conf: Conf
    images: Path
    bad: dict[str, Path]
    run_ids: dict[str, str]

    @property
    def lake(self) -> Lake:
        return Lake(self.conf.lake)

    def copy(self, dest: Path) -> "SmallPipeline":
        """The same pipeline in a copy of the lake at ``dest``, for tests that write runs of their own."""
        shutil.copytree(self.conf.lake, dest)
        return SmallPipeline(self.conf.model_copy(update={"lake": str(dest)}, deep=True), self.images, self.bad,
                             self.run_ids)


@pytest.fixture(scope="session")
def small_pipeline(tmp_path_factory, ray_session, spark) -> SmallPipeline:
    """The small pipeline, built once per test session on the real engines; read it, or ``.copy()`` it to write."""
    from jobs import embed, ingest, neighbors, uniqueness

    root = tmp_path_factory.mktemp("small_pipeline")
    images = root / "images"
    write_image_folder(images, per_class=15)
    bad = add_bad_files(images)
    conf = local_conf(root / "lake", ingest=IngestConf(source=str(images)))
    conf.neighbors.k = 5
    run_ids = {"ingest": ingest.run(conf), "embeddings": embed.run(conf), "neighbors": neighbors.run(conf),
               "uniqueness": uniqueness.run(conf)}
    return SmallPipeline(conf, images, bad, run_ids)


def write_samples(lake: Lake, dataset: str, labels, splits) -> list[str]:
    """Samples ``<dataset>-0000``, ... of ``dataset`` (uris that name no file: for vector-only tests)."""
    ids = [f"{dataset}-{i:04d}" for i in range(len(labels))]
    now = dt.datetime.now(dt.timezone.utc)
    lake.append("samples", pa.Table.from_pylist(
        [dict(sample_id=s, dataset=dataset, uri=f"/data/{s}.png", split=sp, label=lb, width=8, height=8,
              content_hash=s, size_bytes=64, attributes="{}", ingested_at=now)
         for s, lb, sp in zip(ids, labels, splits)], schema=SAMPLES))
    return ids


def write_embeddings_run(lake: Lake, dataset: str, key: str, vectors_: np.ndarray, labels, splits) -> list[str]:
    """Samples of ``dataset`` and a succeeded embeddings run ``key`` holding ``vectors_``."""
    ids = write_samples(lake, dataset, labels, splits)
    with runs.track(lake, brain_key=key, method="embeddings", dataset=dataset, config={}) as run:
        lake.append("embeddings", pa.table({
            "run_id": [run.run_id] * len(ids), "sample_id": ids,
            "vector": pa.array(vectors_.astype(np.float32).tolist(), pa.list_(pa.float32()))}, schema=EMBEDDINGS))
    return ids
