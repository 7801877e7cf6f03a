"""Arrow record batches inside Spark tasks (``mapInArrow``): rows grouped by a key they are sorted by."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa


def grouped(batches: Iterator[pa.RecordBatch], key: str) -> Iterator[pa.Table]:
    """Consecutive rows with one ``key`` value as tables (input sorted by key, e.g. after
    ``sortWithinPartitions``): one group in memory, whatever the batch boundaries. O(rows)."""
    pending: list[pa.RecordBatch] = []
    pending_key = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        keys = batch.column(key).to_numpy()
        if pending and keys[0] != pending_key:
            yield pa.Table.from_batches(pending)
            pending = []
        lo = 0
        for cut in np.flatnonzero(keys[1:] != keys[:-1]) + 1:
            pending.append(batch.slice(lo, int(cut) - lo))
            yield pa.Table.from_batches(pending)
            pending, lo = [], int(cut)
        pending.append(batch.slice(lo))
        pending_key = keys[-1]
    if pending:
        yield pa.Table.from_batches(pending)
