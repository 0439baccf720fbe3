"""Text search and your own model class: a CLIP (real open_clip architecture, tiny config, weights the
test trains and saves) given by import path embeds the images on the Ray pipeline; `brain similar --text`
queries the FAISS index with its text tower; several ids, --reverse, --save-as views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import local_conf, write_image_folder

from brain import index, results, runs, sql
from jobs.cli import main as brain_main
from brain.lake import Lake, plain_strings
from brain.models import ZOO, WeightsNotFoundError

torch = pytest.importorskip("torch", reason="torch is the optional extra lakebrain[vision]")
open_clip = pytest.importorskip("open_clip", reason="open_clip is the optional extra lakebrain[clip]")

pytestmark = pytest.mark.integration

CLASSES = ("cat", "dog", "fish")
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                                             "head_width": 32},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
USER_MODULE = '''"""A user's model: a tiny CLIP made in the test."""

from pathlib import Path

import open_clip

from brain.models.zoo import OpenClipModel

HERE = Path(__file__).parent
open_clip.add_model_config(HERE / "tiny-clip-test.json")


class TinyClip(OpenClipModel):
    def __init__(self, **kwargs):
        super().__init__("tiny-clip-test", HERE / "tiny-clip-test.pt", name="tiny-clip", **{"input_size": 32, **kwargs})


class ColourClassifier:
    """Not a brain Model: any object with predict_all (logits: the top-left pixel's channels / 40, so
    images of a colour theme get noisy, more or less confident predictions)."""

    classes = ["red", "green", "blue"]

    def predict_all(self, images):
        import numpy as np

        return np.stack([img[0, 0].astype(np.float32) / 40 for img in images])
'''


def _prompt(label: str) -> str:
    return f"a photo of a {label}"


def train_tiny_clip(package: Path, images: dict[str, list[np.ndarray]]) -> None:
    """Write a tiny open_clip config and weights trained (contrastive, a few steps) so that each class's
    images embed nearest its prompt: wiring is checked, not accuracy."""
    from brain.models.torch_models import resize_batch
    from brain.models.zoo import CLIP_MEAN, CLIP_STD

    (package / "tiny-clip-test.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(package / "tiny-clip-test.json")
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test")
    pixels = np.concatenate([resize_batch(images[c], 32) for c in CLASSES])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    y = torch.tensor(np.repeat(np.arange(len(CLASSES)), [len(images[c]) for c in CLASSES]))
    tokens = open_clip.get_tokenizer("tiny-clip-test")([_prompt(c) for c in CLASSES])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        img = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        loss = torch.nn.functional.cross_entropy(20 * img @ txt.T, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert (img @ txt.T).argmax(1).eq(y).all(), "the tiny CLIP did not learn the three colour themes"
    torch.save(model.state_dict(), package / "tiny-clip-test.pt")


@pytest.fixture(scope="module")
def clip_lake(tmp_path_factory, ray_session):
    from PIL import Image

    from jobs import embed, ingest, neighbors

    root = tmp_path_factory.mktemp("text")
    paths = write_image_folder(root / "images", per_class=10, classes=CLASSES)
    package = root / "code" / "usermodels"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "clip.py").write_text(USER_MODULE)
    train_tiny_clip(package, {c: [np.asarray(Image.open(p).convert("RGB")) for p in paths if p.parent.name == c]
                              for c in CLASSES})
    conf = local_conf(root / "lake")
    conf.ingest.source = str(root / "images")
    conf.code_paths = [str(package)]  # the driver imports it from there; shipped to Ray when the job connects
    ray_session.shutdown()  # so that this module's jobs start Ray with their code (a fresh `brain embed` does)
    conf.embed.model = "usermodels.clip:TinyClip"
    conf.neighbors.k = 5
    ingest.run(conf)
    embed.run(conf)  # the user's class, by import path, in Ray's decode tasks and model actors
    neighbors.run(conf)
    conf_file = root / "conf.yaml"
    import yaml

    conf_file.write_text(yaml.safe_dump(conf.model_dump()))
    return Lake(conf.lake), conf, str(conf_file)


def _labels(table) -> list[str]:
    return table["label"].to_pylist()


def test_a_user_model_class_embeds_on_the_ray_pipeline(clip_lake):
    lake, _, _ = clip_lake
    run = runs.latest_succeeded(lake, "embeddings")
    assert "ray=" in run["executed_on"]
    vectors = results.load_results(lake, "embeddings")
    assert vectors.num_rows == 30 and len(vectors["vector"][0]) == TINY_CLIP["embed_dim"]


def test_a_user_classifier_object_predicts_on_ray_with_confidence_thresh(clip_lake):
    from jobs import apply_model

    lake, conf, _ = clip_lake
    conf = conf.model_copy(deep=True)
    conf.apply_model = conf.apply_model.model_copy(update=dict(model="usermodels.clip:ColourClassifier",
                                                               brain_key="colours", confidence_thresh=0.9))
    apply_model.run(conf)
    preds = results.load_results(lake, "colours")
    assert preds.classes == ["red", "green", "blue"] and preds.rows.num_rows == 30
    rows = plain_strings(preds.rows).to_pylist()
    for row in rows:  # labels below confidence_thresh are null; logits and confidence are kept
        expected = ["red", "green", "blue"][int(np.argmax(row["logits"]))]
        assert row["label"] == (expected if row["confidence"] >= 0.9 else None)
    assert {r["label"] for r in rows} > {None}  # some images are confident enough (colour themes), some not
    samples = plain_strings(lake.read("samples", columns=["sample_id", "label"]))
    theme = dict(zip(samples["sample_id"].to_pylist(), samples["label"].to_pylist()))
    colour_of = {"cat": "red", "dog": "green", "fish": "blue"}
    assert all(r["label"] in (None, colour_of[theme[r["sample_id"]]]) for r in rows)


def test_patches_of_registered_boxes_embed_with_the_user_model(clip_lake, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs import patch_embeddings, register_predictions

    lake, conf, _ = clip_lake
    conf = conf.model_copy(deep=True)
    ids = sorted(plain_strings(lake.read("samples", columns=["sample_id"]))["sample_id"].to_pylist())[:4]
    boxes = [{"label": "left", "bbox": [0.0, 0.0, 0.5, 1.0], "confidence": 0.9},
             {"label": "right", "bbox": [0.5, 0.0, 0.5, 1.0], "confidence": 0.8}]
    pq.write_table(pa.table({"sample_id": ids, "detections": [boxes] * 4}), tmp_path / "boxes.parquet")
    conf.register_predictions = conf.register_predictions.model_copy(
        update=dict(file=str(tmp_path / "boxes.parquet"), brain_key="boxes"))
    register_predictions.run(conf)
    conf.patches = conf.patches.model_copy(update=dict(source="boxes", model="usermodels.clip:TinyClip",
                                                       brain_key="patches", batch_size=4))
    patch_embeddings.run(conf)
    rows = plain_strings(results.load_results(lake, "patches")).sort_by([("sample_id", "ascending"),
                                                                         ("patch_index", "ascending")])
    assert rows["sample_id"].to_pylist() == [i for i in ids for _ in range(2)]
    assert rows["label"].to_pylist() == ["left", "right"] * 4
    assert {len(v) for v in rows["vector"].to_pylist()} == {TINY_CLIP["embed_dim"]}


def test_text_search_ranks_the_prompted_class_first(clip_lake, tmp_path):
    from brain.similarity import similar

    lake, _, conf_file = clip_lake
    for label in CLASSES:
        top = similar(lake, "knn", text=_prompt(label), k=5)
        assert _labels(top) == [label] * 5, label
        assert top.column_names == ["sample_id", "uri", "label", "split", "distance"]
        assert np.all(np.diff(top["distance"].to_numpy()) >= 0)
    far = similar(lake, "knn", text=_prompt("dog"), k=5, reverse=True)
    assert "dog" not in _labels(far) and np.all(np.diff(far["distance"].to_numpy()) <= 0)
    out = tmp_path / "dogs.json"
    assert brain_main(["similar", "--conf", conf_file, "--text", _prompt("dog"), "-k", "4", "--format", "json",
                       "--out", str(out), "--save-as", "dogs"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in rows] == ["dog"] * 4 and all(r["uri"].endswith(".png") for r in rows)
    # the saved view: SQL, load_results and load_view read it
    saved = sql.query(lake, "SELECT sample_id FROM similarity_views WHERE brain_key = 'dogs' ORDER BY rank")
    assert saved["sample_id"].to_pylist() == [r["sample_id"] for r in rows]
    assert results.load_results(lake, "dogs").num_rows == 4
    view = runs.load_view(lake, "dogs")
    assert sorted(view["sample_id"].to_pylist()) == sorted(r["sample_id"] for r in rows)
    assert set(view["label"].to_pylist()) == {"dog"}
    assert json.loads(runs.get_run(lake, "dogs")["config"])["similarity"]["text"] == _prompt("dog")


def test_several_ids_query_their_mean_vector(clip_lake):
    from brain.similarity import similar

    lake, _, conf_file = clip_lake
    emb = plain_strings(results.load_results(lake, "embeddings")).sort_by("sample_id")
    ids = emb["sample_id"].to_pylist()
    x = np.stack(emb["vector"].to_numpy(zero_copy_only=False))
    a, b = ids[0], ids[15]
    top = similar(lake, "knn", sample_id=[a, b], k=28)
    assert a not in top["sample_id"].to_pylist() and b not in top["sample_id"].to_pylist()
    expected = index.exact_distances(x[[0, 15]].mean(axis=0), x, metric="cosine")
    expected = {s: d for s, d in zip(ids, expected)}
    np.testing.assert_allclose(top["distance"].to_numpy(), [expected[s] for s in top["sample_id"].to_pylist()],
                               atol=1e-5)
    assert brain_main(["similar", "--conf", conf_file, "--id", a, "--id", b, "-k", "3", "--reverse",
                       "--format", "csv"]) == 0


def test_text_search_refuses_an_index_whose_model_has_no_text_tower(clip_lake, capsys):
    from jobs import embed, neighbors

    _, conf, conf_file = clip_lake
    plain = conf.model_copy(deep=True)
    plain.embed.model, plain.embed.brain_key = None, "thumbs"
    plain.neighbors.brain_key, plain.neighbors.embeddings_key = "thumbs_knn", "thumbs"
    embed.run(plain, in_process=True)
    neighbors.run(plain)
    assert brain_main(["similar", "--conf", conf_file, "--key", "thumbs_knn", "--text", "a dog"]) == 2
    err = capsys.readouterr().err
    assert "text search needs a model with a text tower" in err and "'thumbnail'" in err


def test_real_clip_checkpoint_finds_the_prompted_class(tmp_path):
    """With the real ViT-B/32 weights in the weights folder: zero-shot accuracy on colour-named images."""
    try:
        ZOO["clip-vit-b-32"].find_weights()
    except WeightsNotFoundError:
        pytest.skip(f"no real CLIP checkpoint ({ZOO['clip-vit-b-32'].weights_file}) in $BRAIN_WEIGHTS_DIR or "
                    "torch's cache: this machine downloads nothing")
    from brain.models import load_model

    colours = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220)}
    rng = np.random.default_rng(0)
    images = [np.clip(np.array(rgb) + rng.normal(0, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
              for rgb in colours.values() for _ in range(3)]
    with load_model("clip-vit-b-32") as model:
        img = model.embed_all(images)
        txt = model.embed_text([f"a plain {c} square" for c in colours])
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    assert ((img @ txt.T).argmax(1) == np.repeat(np.arange(3), 3)).mean() >= 0.9
