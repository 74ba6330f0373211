"""``dataset=``: readers that yield :class:`~ecgx.formats.record.Record`s, their label maps and the synthetic set."""
