"""The in-process near-duplicates path's Arrow steps: kNN rows → short directed edges → pairs once → groups."""

from __future__ import annotations

import pyarrow as pa
import pytest

from jobs.duplicates import DIRECTED_EDGES, canonical_edges, group_rows, short_edges, within_dataset

LISTS = pa.table({"sample_id": ["a", "b", "c"],
                  "neighbor_ids": pa.array([["b", "c"], ["a", "gone"], ["b"]], pa.list_(pa.string())),
                  "distances": pa.array([[0.1, 0.5], [0.1, 0.05], [0.2]], pa.list_(pa.float32()))})


def test_short_edges_keep_distances_up_to_the_cap_and_ends_in_the_dataset():
    edges = short_edges(LISTS, 0.25, patches=False)
    assert edges.schema == DIRECTED_EDGES
    assert edges.to_pylist() == [{"src": "a", "dst": "b", "distance": pytest.approx(0.1)},
                                 {"src": "b", "dst": "a", "distance": pytest.approx(0.1)},
                                 {"src": "b", "dst": "gone", "distance": pytest.approx(0.05)},
                                 {"src": "c", "dst": "b", "distance": pytest.approx(0.2)}]
    kept = within_dataset(edges, pa.array(["a", "b", "c"]), patches=False)
    assert [(e["src"], e["dst"]) for e in kept.to_pylist()] == [("a", "b"), ("b", "a"), ("c", "b")]


def test_each_pair_once_at_its_least_distance_and_grouped_greedily():
    directed = pa.table([pa.array(["b", "a", "c"]), pa.array(["a", "b", "b"]), pa.array([0.2, 0.1, 0.3])],
                        schema=DIRECTED_EDGES)
    pairs = canonical_edges(directed).sort_by("b")
    assert pairs.to_pylist() == [{"a": "a", "b": "b", "distance": 0.1}, {"a": "b", "b": "c", "distance": 0.3}]
    # the chain a–b–c: a kept with b its duplicate, c kept (b is taken)
    rows = group_rows(pairs, 0.3, "greedy")
    assert rows.to_pylist() == [{"group_id": "a", "kept_sample_id": "a", "sample_id": "b", "distance": 0.1}]
    assert group_rows(pairs, 0.3, "components").column("sample_id").to_pylist() == ["b", "c"]


def test_a_row_whose_lists_differ_in_length_is_named():
    bad = LISTS.set_column(2, "distances", pa.array([[0.1, 0.5], [0.1], [0.2]], pa.list_(pa.float32())))
    with pytest.raises(ValueError, match="sample 'b'.*differ in length"):
        short_edges(bad, 1.0, patches=False)
