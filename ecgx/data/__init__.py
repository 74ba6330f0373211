"""Data: readers yield :class:`~ecgx.data.record.Record`; the cache, splits, transforms and the
DataModule turn records into batches."""
