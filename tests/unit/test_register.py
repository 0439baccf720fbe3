"""Embeddings computed elsewhere: every file format, and errors naming the sample."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from brain.register import check_ids, read_vector_file, to_matrix, vectors_from_attributes


def test_registered_vectors_are_checked_by_sample():
    with pytest.raises(ValueError, match="sample b has a vector of length 1, the first has 2"):
        to_matrix([[1, 2], [3]], ["a", "b"])
    with pytest.raises(ValueError, match="sample b has NaN"):
        to_matrix(np.array([[1, 2], [np.nan, 0]]), ["a", "b"])
    with pytest.raises(ValueError, match="sample zz: not a sample of dataset 'd'"):
        check_ids(["a", "zz"], {"a", "b"}, dataset="d")
    with pytest.raises(ValueError, match="sample a: appears twice"):
        check_ids(["a", "a"], {"a"}, dataset="d")


def test_vector_files_of_every_format_read_the_same(tmp_path):
    ids = ["a", "b", "c"]
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    pq.write_table(pa.table({"id": ids, "emb": vectors.tolist()}), tmp_path / "v.parquet")
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "ids.txt").write_text("a\nb\nc\n")
    for path, kwargs in ((tmp_path / "v.parquet", dict(id_column="id", vector_column="emb")),
                         (tmp_path / "v.npy", dict(ids_path=tmp_path / "ids.txt"))):
        got_ids, got = read_vector_file(path, **kwargs)
        assert got_ids == ids
        np.testing.assert_array_equal(got, vectors)
    with pytest.raises(ValueError, match="give an ids file"):
        read_vector_file(tmp_path / "v.npy")
    with pytest.raises(ValueError, match="no column 'vector'"):
        read_vector_file(tmp_path / "v.parquet", id_column="id")
    attrs = ['{"clip": [0, 1]}', '{"clip": "[2, 3]"}', '{"clip": [4, 5]}']
    np.testing.assert_array_equal(vectors_from_attributes(attrs, "clip", ids), vectors)
