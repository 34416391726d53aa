"""The rows a training run reads, through Ray Data as the launcher builds them: every file of the
seeded stream, in its order, as often as it repeats over epochs."""

from __future__ import annotations

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tests.pretrain_shards import write_shards
from training.shards import open_shards, read_rows, stream_from


def test_a_file_repeated_over_epochs_is_read_every_time(ray_session, tmp_path):
    # Ray 2.60's DataSourceV2 Parquet read dropped a path given twice (1,996 rows asked, 1,245 read);
    # pipelines.ray_session turns it off. Three epochs of three files: each file three times.
    write_shards(tmp_path)
    shards = open_shards(str(tmp_path))
    total = sum(f.rows for f in shards.train)
    stream = stream_from(shards, 7, 0, 3 * total)
    assert len(stream.files) == 9 and len(set(stream.files)) == 3
    want = [row for path in stream.files for row in pq.read_table(path).column("input_ids").to_pylist()]
    ds = read_rows(pafs.LocalFileSystem(), stream.files, block_documents=False)
    ds.context.execution_options.preserve_order = True  # as the trainer runs it
    got = [row.tolist() for batch in ds.iter_batches(batch_format="numpy", batch_size=None)
           for row in batch["input_ids"]]
    assert len(got) == 3 * total
    assert got == want  # the same rows, in the stream's order
