"""A shard whose every image is unreadable: its errors are staged and it yields an empty batch."""

import pyarrow as pa

from jobs.model_pipeline import ModelActor, _ipc, decode_shard


def test_a_shard_with_no_readable_image(lake, tmp_path):
    items = pa.table({"sample_id": ["a", "b"], "uri": [str(tmp_path / "gone-1.png"), str(tmp_path / "gone-2.png")]})
    common = dict(model_name=None, model_kwargs={}, lake_uri=lake.uri, run_id="r")
    decoded = decode_shard(pa.table({"shard": ["000000-x"], "items": [_ipc(items)]}), **common, dataset="d")
    assert decoded["shape"].to_pylist() == [[0, 768]]
    staged = ModelActor(table="embeddings", **common, options={})(decoded)
    assert staged["rows"].to_pylist() == [0]
    assert lake.commit_files("ingest_errors", "r") == 2
    assert lake.commit_files("embeddings", "r") == 0
