"""``ecgx data cache``: a cache built in two shards (two calls, as two jobs would) and joined by
a third call equals the cache ``ecgx train`` builds itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from ecgx.commands.data import main


def test_shards_then_join_from_the_command_line(tmp_path: Path, synthetic_root: Path, capsys,
                                                compose_train) -> None:  # fmt: skip
    overrides = [f"dataset.root={synthetic_root}", f"paths.cache_dir={tmp_path / 'cache'}"]
    main(["cache", *overrides, "--shard", "1/2", "--workers", "1"])
    out = capsys.readouterr().out
    assert "shard 1/2: 172 records in 3 chunks, 172 read" in out
    assert (
        "unfinished: 0/2 (2 of 2 chunks unfinished)" in out
    )  # 300 records: 5 chunks of 64, split 2 + 3
    with pytest.raises(SystemExit, match="shards 0/2 .*--shard i/2"):
        main(["cache", *overrides])  # the join refuses while a shard is missing
    main(["cache", *overrides, "--shard", "0/2"])
    assert "every shard is finished" in capsys.readouterr().out
    main(["cache", *overrides])
    out = capsys.readouterr().out
    assert "(300 records, 12 leads, 100 Hz" in out
    cache_path = Path(out.split("cache: ")[1].split(" (")[0])
    # What `ecgx train` opens for the same data config: a hit on the joined cache, same bytes.
    dm = instantiate(compose_train().data)
    dm.prepare_data()
    assert dm.cache.path.name == cache_path.name
    assert (dm.cache.path / "signals.f32").read_bytes() == (cache_path / "signals.f32").read_bytes()
    with pytest.raises(SystemExit, match="shard='2/2': expected i/N"):
        main(["cache", *overrides, "--shard", "2/2"])
