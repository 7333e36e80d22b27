"""Readers, writers, input expansion and pieces; bad input names the file, line/row and field."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import docs, write_jsonl, write_parquet

from dcurate.core.errors import InputError
from dcurate.io import BatchReader, Piece, ShardWriter, expand_inputs, plan_pieces, read_table


def read_all(path: Path, **kw) -> pa.Table:
    shard = expand_inputs([str(path)])[0]
    return pa.Table.from_batches(list(BatchReader(Piece(shard), **kw)))


@pytest.mark.parametrize("ext", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_roundtrip_every_format(tmp_path, ext):
    fmt = ext.lstrip(".")
    recs = docs(25)
    path = tmp_path / f"x{ext}"
    with ShardWriter(str(path), fmt) as w:
        w.write(pa.RecordBatch.from_pylist(recs))
    t = read_all(path)
    assert t.to_pylist() == recs
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_directory_expansion_mirrors_subfolders_and_skips_hidden(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(2))
    write_jsonl(tmp_path / "in" / "sub" / "b.jsonl.zst", docs(2))
    write_jsonl(tmp_path / "in" / "_dcurate" / "c.jsonl", docs(2))
    write_jsonl(tmp_path / "in" / ".tmp.jsonl", docs(2))
    (tmp_path / "in" / "notes.txt").write_text("x")
    shards = expand_inputs([str(tmp_path / "in")])
    assert [s.stem for s in shards] == ["a", "sub/b"]
    assert [s.fmt for s in shards] == ["jsonl", "jsonl.zst"]


def test_glob_and_list_inputs_and_duplicate_stems(tmp_path):
    write_jsonl(tmp_path / "x" / "p.jsonl", docs(1))
    write_jsonl(tmp_path / "y" / "p.jsonl", docs(1))
    assert len(expand_inputs([str(tmp_path / "x" / "*.jsonl")])) == 1
    with pytest.raises(InputError, match="same output shard 'p'"):
        expand_inputs([str(tmp_path / "x" / "p.jsonl"), str(tmp_path / "y" / "p.jsonl")])
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([str(tmp_path / "nope.jsonl")])


def test_stable_ids_added_when_absent(tmp_path):
    recs = [{"text": f"doc {i}"} for i in range(5)]
    t = read_all(write_jsonl(tmp_path / "shard.jsonl", recs))
    assert t.column("id").to_pylist() == [f"shard/{i}" for i in range(5)]


def test_malformed_json_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "1", "text": "a"}\n{"id": "2", "text": "b"}\n{"id": "3", "text": \n{"id": "4", "text": "d"}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl: line 3: malformed JSON"):
        read_all(p)
    reader = BatchReader(Piece(expand_inputs([str(p)])[0]), on_bad_record="skip")
    rows = [r for b in reader for r in b.to_pylist()]
    assert [r["id"] for r in rows] == ["1", "2", "4"]
    assert reader.bad_records == 1


def test_invalid_utf8_names_line(tmp_path):
    p = tmp_path / "u.jsonl"
    p.write_bytes(b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"u\.jsonl: line 2: invalid UTF-8"):
        read_all(p)


def test_null_and_non_string_text(tmp_path):
    p = write_jsonl(tmp_path / "n.jsonl", [{"id": "1", "text": "a"}, {"id": "2", "text": None}, {"id": "3"}])
    with pytest.raises(InputError, match=r"n\.jsonl: line 2: field 'text' is null"):
        read_all(p)
    reader = BatchReader(Piece(expand_inputs([str(p)])[0]), on_bad_record="skip")
    assert sum(b.num_rows for b in reader) == 1 and reader.bad_records == 2
    q = write_parquet(tmp_path / "num.parquet", [{"id": "1", "text": 5}])
    with pytest.raises(InputError, match="field 'text' must hold strings"):
        read_all(q)
    r = write_parquet(tmp_path / "nul.parquet", [{"id": "1", "text": "x"}, {"id": "2", "text": None}])
    with pytest.raises(InputError, match=r"nul\.parquet: row 2: field 'text' is null"):
        read_all(r)


def test_missing_text_column_lists_columns(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"id": "1", "body": "x", "lang": "en"}])
    with pytest.raises(InputError, match=r"no text field 'text'; available columns: id, body, lang"):
        read_all(p)
    assert read_all(p, text_field="body").num_rows == 1


def test_empty_shard(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text("")
    assert list(BatchReader(Piece(expand_inputs([str(p)])[0]))) == []
    q = write_parquet(tmp_path / "e.parquet", docs(3))
    q.write_bytes(b"")
    with pytest.raises(InputError, match="e.parquet"):
        read_all(q)


def test_truncated_zstd_gzip_parquet(tmp_path):
    good = b"".join(json.dumps(r).encode() + b"\n" for r in docs(3000))
    z = zstandard.ZstdCompressor().compress(good)
    (tmp_path / "t.jsonl.zst").write_bytes(z[: len(z) // 2])
    with pytest.raises(InputError, match=r"t\.jsonl\.zst: truncated or corrupt zstd"):
        read_all(tmp_path / "t.jsonl.zst")
    g = gzip.compress(good)
    (tmp_path / "t.jsonl.gz").write_bytes(g[: len(g) // 2])
    with pytest.raises(InputError, match=r"t\.jsonl\.gz: truncated or corrupt gzip"):
        read_all(tmp_path / "t.jsonl.gz")
    pq_path = write_parquet(tmp_path / "t.parquet", docs(100))
    data = pq_path.read_bytes()
    pq_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"t\.parquet: not a readable Parquet file"):
        read_all(pq_path)


def test_field_type_change_between_blocks_is_reported(tmp_path, monkeypatch):
    import dcurate.io.reader as reader

    monkeypatch.setattr(reader, "BLOCK_BYTES", 200)
    recs = [{"id": str(i), "text": "x" * 50, "n": i} for i in range(10)] + [{"id": "z", "text": "y", "n": "str"}]
    p = write_jsonl(tmp_path / "types.jsonl", recs)
    with pytest.raises(InputError, match=r"types\.jsonl: lines? \d+"):
        read_all(p)


def test_streaming_batches_are_bounded(tmp_path, monkeypatch):
    import dcurate.io.reader as reader

    monkeypatch.setattr(reader, "BLOCK_BYTES", 64 * 1024)
    p = write_jsonl(tmp_path / "big.jsonl.zst", docs(5000))
    sizes = [b.nbytes for b in BatchReader(Piece(expand_inputs([str(p)])[0]))]
    assert len(sizes) > 5 and max(sizes) < 256 * 1024


def test_jsonl_pieces_cover_file_exactly(tmp_path):
    recs = docs(500)
    p = tmp_path / "big.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" + ("\n" if i % 50 == 0 else "") for i, r in enumerate(recs)))
    shard = expand_inputs([str(p)])[0]
    pieces = plan_pieces(shard, piece_bytes=4000)
    assert len(pieces) > 5
    rows = []
    for piece in pieces:
        b = list(BatchReader(piece))
        t = pa.Table.from_batches(b)
        assert t.num_rows == 0 or t.column("id")[0].as_py() == recs[piece.row_offset]["id"]
        rows.extend(t.to_pylist())
    assert [r["id"] for r in rows] == [r["id"] for r in recs]


def test_parquet_pieces_by_row_groups(tmp_path):
    p = tmp_path / "rg.parquet"
    pq.write_table(pa.Table.from_pylist(docs(400)), p, row_group_size=50)
    pieces = plan_pieces(expand_inputs([str(p)])[0], piece_bytes=3000)
    assert len(pieces) > 1
    ids = [r["id"] for pc in pieces for b in BatchReader(pc) for r in b.to_pylist()]
    assert ids == [r["id"] for r in docs(400)]
    no_id = tmp_path / "noid.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": f"t{i}"} for i in range(400)]), no_id, row_group_size=50)
    pieces = plan_pieces(expand_inputs([str(no_id)])[0], piece_bytes=1000)
    ids = [r["id"] for pc in pieces for b in BatchReader(pc) for r in b.to_pylist()]
    assert ids == [f"noid/{i}" for i in range(400)]


def test_read_table_of_side_inputs(corpus):
    t = read_table([str(corpus)])
    assert t.num_rows == 180
    assert set(t.column_names) >= {"id", "text", "domain"}


def test_jsonl_writer_handles_nested_temporal_and_non_finite_values(tmp_path):
    import datetime
    import decimal

    from dcurate.io import jsonl_bytes

    batch = pa.RecordBatch.from_pydict(
        {
            "id": ["a", "b"],
            "text": ["x\n\"quoted\"", "ünïcode 東京"],
            "tags": [["p", "q"], []],
            "meta": [{"k": 1}, {"k": None}],
            "when": [datetime.datetime(2024, 1, 2, 3, 4, 5), None],
            "score": [float("nan"), 0.25],
            "price": pa.array([decimal.Decimal("1.50"), None], pa.decimal128(5, 2)),
        }
    )
    lines = [json.loads(x) for x in jsonl_bytes(batch).splitlines()]
    assert list(lines[0]) == batch.schema.names  # keys in column order
    assert lines[0]["text"] == 'x\n"quoted"' and lines[1]["text"] == "ünïcode 東京"
    assert lines[0]["tags"] == ["p", "q"] and lines[1]["meta"] == {"k": None}
    assert lines[0]["when"] == "2024-01-02T03:04:05" and lines[0]["score"] is None
    assert lines[0]["price"] == "1.50" and lines[1]["score"] == 0.25
