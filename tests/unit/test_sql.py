"""SQL over tables delta-rs wrote (string_view columns) with WHERE filters on strings."""

from brain import ingest, sql


def test_where_on_string_columns_of_delta_written_tables(lake, image_folder):
    samples, _ = ingest.probe(ingest.discover_folder(image_folder), dataset="pets", run_id="r")
    lake.upsert("samples", samples, key="sample_id")  # a delta-rs merge: string_view columns in the files
    found = sql.query(lake, "SELECT label, count(*) AS n FROM samples WHERE label = 'cat' AND dataset IN ('pets') "
                            "GROUP BY label").to_pylist()
    assert found == [{"label": "cat", "n": 12}]
