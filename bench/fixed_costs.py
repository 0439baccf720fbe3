"""Benchmark: fixed engine costs of the curation chain, run three ways side by side in one run.

The chain: ingest → register-embeddings → neighbors → uniqueness → duplicates → unique →
register-predictions → label-quality, over N tiny images with precomputed vectors (a decaying
spectrum, overlapping modes, near-duplicates made by shifting and brightening an image), labels (some
wrong) and logits. Each way has its own lake:

* ``separate``: one `brain STEP` process per step, no engines up: each Ray / Spark step starts its own;
* ``engines_up``: the same commands after `brain engines up` (Ray head + Spark Connect server on loopback);
* ``one_run``: one `brain run STEP...` process with the engines up.

Per step: wall time, the run's ``prepare_s`` (reading and checking its input files and tables before the
run starts: work that grows with N), ``work_s`` (its block) and ``engine_start_s`` (starting / joining
engines); fixed cost = wall − prepare − work (process start, imports, engine start or attach, stopping).
The engines' own start (`brain engines up`) is reported apart.

    .venv/bin/python bench/fixed_costs.py [--n 20000] [--ways separate,engines_up,one_run] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = ("ingest", "register-embeddings", "neighbors", "uniqueness", "duplicates", "unique", "register-predictions",
         "label-quality")
CLASSES = 10
DATASET = "fixed_costs"


def make_data(folder: Path, n: int, *, dim: int = 64, modes: int = 40, seed: int = 0) -> dict[str, str]:
    """Images, vectors, logits for ``n`` samples; returns the config fields naming the files."""
    from brain.ingest import sample_id

    rng = np.random.default_rng(seed)
    spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1))  # axis std ∝ 1/√(i+1): variance decays like real embeddings
    centers = rng.normal(size=(modes, dim)) * spectrum
    mode = rng.integers(0, modes, n)
    true_class = mode % CLASSES  # several modes per class, and modes of different classes overlap
    vectors = centers[mode] + 1.2 * rng.normal(size=(n, dim)) * spectrum
    n_dup = n // 30  # near-duplicates: a shifted, brightened copy of an earlier image, its vector close by
    dup_of = rng.choice(n - n_dup, n_dup, replace=False)
    dups = np.arange(n - n_dup, n)
    mode[dups], true_class[dups] = mode[dup_of], true_class[dup_of]
    vectors[dups] = vectors[dup_of] + 0.03 * rng.normal(size=(n_dup, dim)) * spectrum
    given = true_class.copy()
    wrong = rng.random(n) < 0.05
    given[wrong] = (given[wrong] + rng.integers(1, CLASSES, wrong.sum())) % CLASSES

    images = folder / "images"
    # each image its own layout (a random 4×4 colour grid) under noise; a near-duplicate: its original
    # shifted by a pixel and brightened
    grids = rng.integers(30, 226, size=(n, 4, 4, 3)).repeat(4, axis=1).repeat(4, axis=2)
    pixels = np.clip(grids + rng.normal(0, 20, (n, 16, 16, 3)), 0, 255).astype(np.uint8)
    pixels[dups] = np.clip(np.roll(pixels[dup_of].astype(int), 1, axis=2) + 12, 0, 255)
    uris = []
    for i in range(n):
        path = images / f"class{given[i]}" / f"img-{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i]).save(path)
        uris.append(str(path.resolve()))
    ids = [sample_id(DATASET, uri) for uri in uris]
    pq.write_table(pa.table({"sample_id": ids, "vector": pa.array(list(vectors.astype(np.float32)),
                                                                  pa.list_(pa.float32()))}),
                   folder / "vectors.parquet")
    logits = np.log(np.full((n, CLASSES), 0.02)) + rng.normal(0, 0.8, (n, CLASSES))
    logits[np.arange(n), true_class] += 3.0
    np.save(folder / "logits.npy", logits.astype(np.float32))
    (folder / "ids.txt").write_text("\n".join(ids) + "\n")
    (folder / "classes.txt").write_text("\n".join(f"class{c}" for c in range(CLASSES)) + "\n")
    return {"ingest.source": str(images), "register_embeddings.file": str(folder / "vectors.parquet"),
            "register_predictions.file": str(folder / "logits.npy"),
            "register_predictions.ids_file": str(folder / "ids.txt"),
            "register_predictions.classes_file": str(folder / "classes.txt")}


def write_conf(path: Path, lake: Path, files: dict[str, str]) -> None:
    conf = yaml.safe_load((ROOT / "conf" / "local.yaml").read_text())
    conf.update(lake=str(lake), dataset=DATASET)
    for field, value in files.items():
        section, name = field.split(".")
        conf.setdefault(section, {})[name] = value
    conf["unique"] = {"n": 500}
    # Duplicates as FiftyOne Brain finds them (the figures compared): an embedding-distance threshold
    # (near-duplicate vectors here lie within 0.01 of their original). lakebrain's default also
    # verifies every candidate pair on pixels (~5 ms a pair), work FiftyOne does not do: at 20k it
    # alone takes ~170 s on this machine.
    conf["duplicates"] = {"thresh": 0.02}
    path.write_text(yaml.safe_dump(conf))


def brain(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "brain"), *args], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    took = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"brain {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}")
    return took, done.stdout


def step_runs(lake: Path) -> list[dict]:
    """The lake's succeeded runs in the order they started, with their metrics as dicts."""
    from brain import runs
    from brain.lake import Lake

    table = runs.catalog(Lake(str(lake))).runs
    done = [r for r in table.to_pylist() if r["status"] in ("succeeded", "superseded")]
    return [dict(r, metrics=dict(r["metrics"] or [])) for r in sorted(done, key=lambda r: r["started_at"])]


def summed(records: list[dict]) -> dict[str, float]:
    return {key: sum(r["metrics"].get(key, 0.0) for r in records) for key in ("prepare_s", "work_s",
                                                                                 "engine_start_s")}


def fixed_s(row: dict) -> float:
    """A step's fixed cost: its wall time less the work its runs recorded (reading inputs, then the run)."""
    return row["wall_s"] - row["prepare_s"] - row["work_s"]


def chain(way: str, conf_file: Path, lake: Path, env: dict[str, str], steps: tuple[str, ...]) -> list[dict]:
    """Per step: wall_s, and prepare_s / work_s / engine_start_s summed over the step's runs (label-quality has
    two)."""
    if way == "one_run":
        took, out = brain(["run", *steps, "--conf", str(conf_file)], env)
        printed = re.findall(r"^(\S+): run (\w+) succeeded in ([\d.]+) s", out, re.M)
        records, rows, at = step_runs(lake), [], 0
        for step, run_id, wall in printed:  # a step's runs: from the previous step's last run to its own
            last = next(i for i, r in enumerate(records) if r["run_id"] == run_id)
            rows.append(dict(step=step, wall_s=float(wall), **summed(records[at:last + 1])))
            at = last + 1
        rows.append(dict(step="(process start, exit)", wall_s=took - sum(r["wall_s"] for r in rows), prepare_s=0.0,
                         work_s=0.0, engine_start_s=0.0))
        return rows
    rows, seen = [], 0
    for step in steps:
        took, _ = brain([step, "--conf", str(conf_file)], env)
        records = step_runs(lake)
        rows.append(dict(step=step, wall_s=took, **summed(records[seen:])))
        seen = len(records)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--ways", default="separate,engines_up,one_run")
    parser.add_argument("--skip", default="", help="steps to leave out, comma-separated (e.g. duplicates, whose "
                                                   "pixel verification is most of the chain's work on 2 cores)")
    parser.add_argument("--keep", action="store_true", help="keep the data and lakes")
    args = parser.parse_args()
    steps = tuple(step for step in STEPS if step not in args.skip.split(","))

    work = Path(tempfile.mkdtemp(prefix="fixed-costs-"))
    state = work / "state"  # this bench's own engines (never another session's)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAKEBRAIN_STATE_DIR": str(state)}
    started = time.perf_counter()
    files = make_data(work / "data", args.n)
    print(f"data: {args.n} samples in {time.perf_counter() - started:.1f} s ({work})", flush=True)
    results, up_s = {}, None
    try:
        for way in args.ways.split(","):
            lake = work / f"lake-{way}"
            conf_file = work / f"{way}.yaml"
            write_conf(conf_file, lake, files)
            if way != "separate" and up_s is None:
                up_s, _ = brain(["engines", "up", "--conf", str(conf_file)], env)
                print(f"brain engines up: {up_s:.1f} s", flush=True)
            results[way] = chain(way, conf_file, lake, env, steps)
            total = sum(r["wall_s"] for r in results[way])
            print(f"\n{way}: chain {total:.1f} s", flush=True)
            print(f"  {'step':22s} {'wall s':>8s} {'prepare s':>10s} {'work s':>8s} {'engine s':>9s} {'fixed s':>8s}")
            for r in results[way]:
                print(f"  {r['step']:22s} {r['wall_s']:8.1f} {r['prepare_s']:10.2f} {r['work_s']:8.1f} "
                      f"{r['engine_start_s']:9.2f} {fixed_s(r):8.2f}", flush=True)
    finally:
        if up_s is not None:
            brain(["engines", "down"], env)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = {way: round(sum(r["wall_s"] for r in rows), 1) for way, rows in results.items()}
    fixed = {way: round(max(fixed_s(r) for r in rows if not r["step"].startswith("(")), 1)
             for way, rows in results.items()}
    load = os.getloadavg()[0]
    print(json.dumps({"chain_s": summary, "max_step_fixed_s": fixed}))
    print("RESULT n=%d skipped=%s %s engines_up_start_s=%s %s load1=%.1f" % (
        args.n, args.skip or "none", " ".join(f"{way}_chain_s={s}" for way, s in summary.items()),
        "na" if up_s is None else f"{up_s:.1f}",
        " ".join(f"{way}_max_fixed_s={f:.1f}" for way, f in fixed.items()), load))


if __name__ == "__main__":
    main()
