"""``ecgx bench``: speed and memory of this machine, measured against the seeds' ways.

One module per suite (``ingest``, ``load``, ``train``, ``explain``, ``sweep``, ``memory``), each
with ``run(cfg, ctx) -> list[Figure]``; :mod:`ecgx.bench.core` holds the figures, timing and the
report, :mod:`ecgx.commands.bench` the command.
"""
