"""The subgroup table: counts from the metadata, too-small groups, and a gap built in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgx.errors import ConfigValueError
from ecgx.evaluation.scoring import metric_function
from ecgx.evaluation.subgroups import TOO_SMALL, format_subgroups, group_labels, subgroup_table


def _meta(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sex = rng.choice([0.0, 1.0, np.nan], size=n, p=[0.55, 0.43, 0.02])
    age = rng.uniform(20, 95, size=n)
    age[:5] = np.nan
    site = rng.choice(["A", "B", "C"], size=n, p=[0.6, 0.37, 0.03])
    return pd.DataFrame({"record_id": [str(i) for i in range(n)], "sex": sex, "age": age,
                         "site": site, "labels": [{}] * n})  # fmt: skip


def _biased(meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Two classes; right for men, coin flips for women."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(len(meta), 2)).astype(float)
    probs = np.clip(y * 0.8 + rng.uniform(0, 0.2, y.shape), 0, 1)
    women = (meta["sex"] == 1).to_numpy()
    probs[women] = rng.uniform(0, 1, (int(women.sum()), 2))
    return y, probs


def test_counts_equal_the_metadata_and_small_groups_are_not_scored() -> None:
    meta = _meta()
    y, probs = _biased(meta)
    fn = metric_function("multilabel", "macro_auroc", ["a", "b"])
    result = subgroup_table(meta, y, probs, fn, "macro_auroc", ["sex", "age", "site"],
                            age_bins=[0, 40, 60, 80], min_size=20, n_resamples=30)  # fmt: skip
    t = result.table.set_index(["column", "group"])
    assert t.loc[("sex", "male"), "n"] == int((meta["sex"] == 0).sum())
    assert t.loc[("sex", "female"), "n"] == int((meta["sex"] == 1).sum())
    assert t.loc[("sex", "unknown"), "n"] == int(meta["sex"].isna().sum())
    ages = meta["age"]
    assert t.loc[("age", "[40, 60)"), "n"] == int(((ages >= 40) & (ages < 60)).sum())
    assert t.loc[("age", "outside bins"), "n"] == int((ages >= 80).sum())
    assert t.loc[("age", "unknown"), "n"] == 5
    for column in ("sex", "age", "site"):  # every record in exactly one group per column
        assert result.table.loc[result.table["column"] == column, "n"].sum() == len(meta)
    for column, value in (("site", "C"), ("sex", "unknown"), ("age", "unknown")):
        row = t.loc[(column, value)]
        assert row["n"] < 20 and row["status"] == TOO_SMALL and np.isnan(row["value"])
    site_b = t.loc[("site", "B")]
    assert site_b["status"] == "scored" and site_b["ci_low"] <= site_b["value"] <= site_b["ci_high"]
    assert "too small" in format_subgroups(result)


def test_a_model_biased_against_one_group_shows_the_gap() -> None:
    meta = _meta()
    y, probs = _biased(meta)
    fn = metric_function("multilabel", "macro_auroc", ["a", "b"])
    result = subgroup_table(meta, y, probs, fn, "macro_auroc", ["sex", "site"], min_size=20,
                            n_resamples=50)  # fmt: skip
    t = result.table.set_index(["column", "group"])
    assert t.loc[("sex", "male"), "value"] == pytest.approx(1.0)
    assert 0.35 < t.loc[("sex", "female"), "value"] < 0.65
    assert t.loc[("sex", "female"), "ci_high"] < t.loc[("sex", "male"), "ci_low"]
    gaps = result.gaps.set_index("column")
    assert gaps.loc["sex", "best"] == "male" and gaps.loc["sex", "worst"] == "female"
    assert gaps.loc["sex", "gap"] == pytest.approx(1.0 - t.loc[("sex", "female"), "value"])
    assert gaps.loc["sex", "gap"] > 0.3
    assert gaps.loc["site", "gap"] < gaps.loc["sex", "gap"]  # sites mix both sexes alike


def test_unknown_columns_and_bad_bins_are_refused_by_name() -> None:
    meta = _meta(10)
    with pytest.raises(ConfigValueError, match=r"'height' is not a metadata column.*'site'"):
        group_labels(meta, "height", [0, 50])
    with pytest.raises(ConfigValueError, match=r"age_bins must be increasing"):
        group_labels(meta, "age", [0, 60, 40])
