"""Hostile input on the real local Ray, Spark and Delta lake: bad files cost one error row each, bad vectors fail
their run without touching the current one, and local engines listen on loopback only."""

from __future__ import annotations

import ipaddress
import os
import shutil

import numpy as np
import pyarrow.compute as pc
import pytest

from brain import runs
from brain.config import IngestConf
from brain.lake import Lake
from tests.conftest import local_conf
from tests.hostile import png_with_declared_size, textured, write_hostile_folder

pytestmark = pytest.mark.integration


def _errors_by_uri(lake: Lake, run_id: str) -> dict[str, str]:
    rows = lake.read("ingest_errors", columns=["uri", "reason"], filter=pc.field("run_id") == run_id)
    return dict(zip(rows["uri"].to_pylist(), rows["reason"].to_pylist()))


def test_a_scan_over_hostile_files_lands_the_good_ones_and_a_later_good_file(tmp_path, ray_session, spark):
    from PIL import Image

    from jobs import scan

    images = tmp_path / "images"
    expected = write_hostile_folder(images)
    conf = local_conf(tmp_path / "lake", ingest=IngestConf(source=str(images)))
    conf.neighbors.k = 3
    # every step on the engines: embed on Ray Data, kNN on Ray, uniqueness on Spark
    conf.scan.in_process_max = conf.scan.in_process_rows = 0
    lake = Lake(conf.lake)
    scan.run(conf)

    samples = lake.read("samples", columns=["sample_id", "uri", "width", "height"])
    good = 3 * 4 + 1  # three classes of four, and the 12000² PNG
    assert samples.num_rows == good
    huge = samples.filter(pc.ends_with(samples["uri"], "huge.png")).to_pylist()[0]
    assert (huge["width"], huge["height"]) == (12_000, 12_000)  # the file's own size, not the decoded one
    errors = _errors_by_uri(lake, runs.latest_succeeded(lake, "ingest_pets")["run_id"])
    assert set(errors) == set(expected)
    for uri, words in expected.items():
        assert words in errors[uri] and "\x1b" not in errors[uri], (uri, errors[uri])
    for key, table in (("embeddings", "embeddings"), ("uniqueness", "uniqueness")):
        rows = lake.read(table, filter=pc.field("run_id") == runs.latest_succeeded(lake, key)["run_id"])
        assert rows.num_rows == good, key

    # a good file arrives, and an ingested image is swapped for a bomb behind the lake's back
    Image.fromarray(textured(np.random.default_rng(5), 24, 90)).save(images / "dog" / "late arrival.png")
    swapped = images / "cat" / "cat-0 ü.png"
    png_with_declared_size(swapped, 90_000, 90_000)
    scan.run(conf)
    uris = set(lake.read("samples", columns=["uri"])["uri"].to_pylist())
    assert str(images / "dog" / "late arrival.png") in uris
    emb = runs.latest_succeeded(lake, "embeddings")
    embedded = lake.read("embeddings", columns=["sample_id"], filter=pc.field("run_id") == emb["run_id"])
    # + the late file; the swapped file keeps its last good samples row and vector, its error row says why
    assert embedded.num_rows == good + 1
    reasons = _errors_by_uri(lake, runs.latest_succeeded(lake, "ingest_pets")["run_id"])
    assert "decompression bomb" in reasons[str(swapped)]
    assert set(expected) <= set(reasons)  # still-bad files keep their rows


def nan_model(path):
    torch = pytest.importorskip("torch")

    class NaNEmbedder(torch.nn.Module):
        def forward(self, x):
            out = x.flatten(1)[:, :8]
            return out * torch.where(out[:, :1] > -1e9, float("nan"), 1.0)  # NaN for every sample

    torch.jit.save(torch.jit.script(NaNEmbedder()), str(path))
    return str(path)


@pytest.fixture
def ingested(tmp_path, ray_session):
    """(images folder, config, lake) of the hostile folder (without the big image), ingested."""
    from jobs import ingest

    images = tmp_path / "images"
    write_hostile_folder(images, big=False)
    conf = local_conf(tmp_path / "lake", ingest=IngestConf(source=str(images)))
    ingest.run(conf)
    return images, conf, Lake(conf.lake)


def test_a_model_emitting_nan_fails_its_run_naming_the_sample_and_the_current_run_stays(tmp_path, ingested):
    from jobs import embed

    _, conf, lake = ingested
    good_run = embed.run(conf)
    before = lake.read("embeddings", filter=pc.field("run_id") == good_run).sort_by("sample_id")

    conf.embed.model = nan_model(tmp_path / "nan.pt")
    conf.models.input_size = 16
    with pytest.raises(Exception, match=r"sample [0-9a-f]{16} has NaN or infinite values in its vector") as err:
        embed.run(conf)
    assert "\x1b" not in str(err.value).split("\n")[0]
    assert runs.latest_succeeded(lake, "embeddings")["run_id"] == good_run
    after = lake.read("embeddings", filter=pc.field("run_id") == good_run).sort_by("sample_id")
    assert after.equals(before)
    failed = runs.get_run(lake, "embeddings")
    assert failed["status"] == "failed" and lake.read("embeddings").num_rows == before.num_rows


def _listening(pids: set[int]) -> list[tuple[int, ipaddress._BaseAddress, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that one of ``pids`` holds (/proc/net/tcp{,6})."""
    owner = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    owner[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in owner:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            # the kernel prints each 32-bit word in host (little-endian) order
            addr = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            found.append((owner[inode], ipaddress.ip_address(addr), int(hex_port, 16)))
    return found


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def test_local_ray_and_spark_listen_on_loopback_only(ray_session, spark):
    ray = ray_session
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    assert spark.range(10).count() == 10
    pids = {os.getpid(), *_descendants(os.getpid())}
    sockets = _listening(pids)
    assert len(sockets) >= 5  # GCS, raylet, agents, workers, the JVM's driver
    names = {pid: open(f"/proc/{pid}/cmdline").read().split("\0")[0] for pid, _, _ in sockets}
    assert any("java" in name for name in names.values()), names
    exposed = [(names[pid], str(addr), port) for pid, addr, port in sockets
               if not (addr.is_loopback or getattr(addr, "ipv4_mapped", None) and addr.ipv4_mapped.is_loopback)]
    assert exposed == []


def test_a_shard_survives_a_bomb_swapped_in_after_ingest(ingested):
    """Embed finds a bomb that ingest never saw: one decode error row, the other images embedded on Ray."""
    from jobs import embed

    images, conf, lake = ingested
    victim = images / "dog" / "dog-1 ü.png"
    shutil.copyfile(images / "cat" / "bomb.png", victim)
    run_id = embed.run(conf)
    assert lake.read("embeddings", filter=pc.field("run_id") == run_id).num_rows == 11
    assert "decompression bomb" in _errors_by_uri(lake, run_id)[str(victim)]
