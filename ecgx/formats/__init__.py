"""File formats: each module turns one file into a :class:`~ecgx.formats.record.Record`."""
