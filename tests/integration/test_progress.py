"""Long steps report progress when their output is not a terminal: periodic lines with counts, rate and ETA.

The jobs run as separate processes whose stderr is a pipe (as under CI, ``ray job submit`` or cron),
with ``LAKEBRAIN_PROGRESS_INTERVAL`` shortened so a small job lasts several intervals.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
from tests.conftest import ROOT, write_image_folder

pytestmark = pytest.mark.integration

def _run(args: list[str], *, timeout: float = 300) -> str:
    env = {**os.environ, "LAKEBRAIN_PROGRESS_INTERVAL": "0.3", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_ingest_and_embed_log_periodic_progress(tmp_path):
    write_image_folder(tmp_path / "images", per_class=24, size=32)
    common = ["--set", f"lake={tmp_path / 'lake'}", "--set", "dataset=pets", "--set", "ray.num_cpus=2"]
    ingest = _run(["-m", "jobs.ingest", *common, "--set", f"ingest.source={tmp_path / 'images'}"])
    assert re.search(r"ingest: done, 72 files in [\d.]+ s", ingest), ingest[-2000:]
    embed = _run(["-m", "jobs.embed", *common, "--set", "embed.shard_size=6", "--set", "embed.batch_size=6"])
    # Before the first shard is staged a line has no rate to estimate from, so no ETA yet.
    periodic = re.findall(r"embeddings: (\d+)/72 samples \(\d+%\), [\d.]+ samples/s(, ETA \d+)?", embed)
    assert len(periodic) >= 2, embed[-3000:]
    counts = [int(count) for count, _ in periodic]
    assert counts == sorted(counts) and counts[-1] <= 72
    assert all(eta for count, eta in periodic if int(count) > 0)
    assert re.search(r"embeddings: done, 72 samples in [\d.]+ s", embed)
    assert "\r" not in embed  # no terminal bars in a log


def test_spark_stages_log_their_task_progress():
    script = textwrap.dedent("""
        import time
        from tests.conftest import local_conf
        from jobs.registry import setup_logging
        from jobs.engines import spark_session

        setup_logging()
        spark = spark_session(local_conf("unused"))

        def slow(batches):
            for batch in batches:
                time.sleep(1.5)
                yield batch

        spark.range(0, 8, numPartitions=8).mapInPandas(slow, "id long").collect()
        time.sleep(1)
        spark.stop()
    """)
    out = _run(["-c", script])
    periodic = re.findall(r"spark stage \d+(?: \([^)]*\))?: (\d+)/8 tasks \(\d+%\), [\d.]+ tasks/s(, ETA \d+)?", out)
    assert len(periodic) >= 2 and all(eta for count, eta in periodic if int(count) > 0), out[-3000:]
    assert re.search(r"spark stage \d+( \([^)]*\))?: done, 8 tasks", out), out[-3000:]
