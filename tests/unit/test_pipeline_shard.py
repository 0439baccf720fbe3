"""A shard whose every image is unreadable: its errors are staged and it yields an empty batch."""

import pyarrow as pa

from brain.images import DecodeLimits
from jobs.model_pipeline import ModelActor, _ipc, decode_shard


def test_a_shard_with_no_readable_image(lake, tmp_path):
    items = pa.table({"sample_id": ["a", "b"], "uri": [str(tmp_path / "gone-1.png"), str(tmp_path / "gone-2.png")]})
    common = dict(model_name=None, model_kwargs={}, lake=lake, run_id="r")
    decoded = decode_shard(pa.table({"shard": ["000000-x"], "items": [_ipc(items)]}), **common, dataset="d",
                           limits=DecodeLimits())
    assert decoded["shape"].to_pylist() == [[0, 768]]
    staged = ModelActor(table="embeddings", **common, options={})(decoded)
    assert staged["rows"].to_pylist() == [0]
    assert lake.commit_files("ingest_errors", "r") == 2
    assert lake.commit_files("embeddings", "r") == 0


def test_shards_start_with_one_batch_and_keep_their_ids():
    from jobs.model_pipeline import shard_items

    items = pa.table({"sample_id": [f"s{i:03d}" for i in range(25)][::-1], "uri": ["u"] * 25})
    shards = shard_items(items, 10, first_shard_size=4)
    assert [part.num_rows for _, part in shards] == [4, 10, 10, 1]
    assert shards[0][1]["sample_id"].to_pylist() == ["s000", "s001", "s002", "s003"]
    assert [sid for sid, _ in shards] == [sid for sid, _ in shard_items(items, 10, first_shard_size=4)]
    assert [part.num_rows for _, part in shard_items(items, 10)] == [10, 10, 5]
    assert [part.num_rows for _, part in shard_items(items, 10, first_shard_size=50)] == [10, 10, 5]
    assert shard_items(items.slice(0, 0), 10, first_shard_size=4) == []
