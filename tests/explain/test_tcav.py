"""TCAV: concept selection rules, TCAV on ecgx 1D models (plain CNN and ResNets), and a model
trained here to detect a synthetic feature, where the TCAV answer is known."""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ecgx.explain.tcav import TCAVResult, concept_records, run_tcav
from ecgx.models.catalog import build

COLUMNS = ["concept", "layer", "target", "score_mean", "score_std", "magnitude_mean",
           "random_mean", "p_value", "n_sets", "cav_accuracy_mean"]  # fmt: skip


# --- concept_records ------------------------------------------------------------------------


@pytest.fixture
def meta() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "scp_codes": [
                "{'NORM': 100.0, 'SR': 0.0}",
                "{'LVH': 50.0, 'SR': 0.0}",
                "{'LVH': 100.0, 'CLBBB': 100.0}",
                "{'IMI': 15.0}",
                {"LVH": 0.0},  # an already-parsed dict works too
            ],
            "age": [30.0, 80.0, 75.0, np.nan, 60.0],
            "sex": [0, 1, 1, 0, 1],
        },
        index=[10, 11, 12, 13, 14],  # positional indices are returned, not the index labels
    )


def test_statement_rule(meta: pd.DataFrame) -> None:
    assert concept_records(meta, {"statement": "LVH"}).tolist() == [1, 2, 4]
    assert concept_records(meta, {"statement": "LVH", "min_likelihood": 50}).tolist() == [1, 2]
    assert concept_records(meta, {"statement": ["CLBBB", "IMI"]}).tolist() == [2, 3]
    assert concept_records(meta, {"statement": "AMI"}).dtype == np.int64


def test_column_rule(meta: pd.DataFrame) -> None:
    assert concept_records(meta, {"column": "age", "op": ">=", "value": 75}).tolist() == [1, 2]
    assert concept_records(meta, {"column": "age", "op": "<", "value": 75}).tolist() == [0, 4]
    # A missing age is never evidence, not even for !=.
    assert concept_records(meta, {"column": "age", "op": "!=", "value": 30}).tolist() == [1, 2, 4]
    assert concept_records(meta, {"column": "sex", "op": "==", "value": 1}).tolist() == [1, 2, 4]
    assert concept_records(meta, {"column": "age", "op": "in", "value": [30, 60]}).tolist() == [
        0,
        4,
    ]


def _beats(fs: float, hr: float, seconds: float = 10.0) -> np.ndarray:
    """12 leads of Gaussian QRS complexes at ``hr`` bpm plus a little noise."""
    t = np.arange(int(seconds * fs)) / fs
    r = np.arange(0.4, seconds - 0.4, 60.0 / hr)
    qrs = np.exp(-0.5 * ((t[None, :] - r[:, None]) / 0.02) ** 2).sum(axis=0)
    noise = 0.01 * np.random.default_rng(int(hr)).standard_normal((12, t.size))
    return np.linspace(0.5, 1.5, 12)[:, None] * qrs + noise


def test_property_rule() -> None:
    fs = 100.0
    signals = [_beats(fs, hr) for hr in (60, 120, 75, 150)]
    meta = pd.DataFrame({"ecg_id": [1, 2, 3, 4]})
    rule = {"property": "heart_rate_bpm", "op": ">", "value": 100}
    assert concept_records(meta, rule, signals=signals, fs=fs).tolist() == [1, 3]
    # Normal QRS (Gaussian sigma 20 ms: ~100 ms wide) is not "QRS > 120 ms".
    wide = {"property": "qrs_duration_ms", "op": ">", "value": 120}
    assert concept_records(meta, wide, signals=signals, fs=fs).tolist() == []


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ({"statment": "LVH"}, "exactly one of"),
        ({"statement": "LVH", "column": "age"}, "exactly one of"),
        ({"statement": "LVH", "likelihood": 50}, r"unknown keys \['likelihood'\]"),
        ({"column": "weight", "op": ">", "value": 1}, "unknown column 'weight'"),
        ({"column": "age", "op": "=>", "value": 1}, "unknown op '=>'"),
        ({"column": "age", "op": "in", "value": 30}, "needs a list"),
        ({"column": "age", "op": ">"}, r"lacks \['value'\]"),
        ({"property": "qt_ms", "op": ">", "value": 1}, "unknown property 'qt_ms'"),
        ({"property": "heart_rate_bpm", "op": ">", "value": 1}, "needs `signals` and `fs`"),
    ],
)
def test_rule_errors(meta: pd.DataFrame, rule: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        concept_records(meta, rule)


def test_statement_rule_needs_scp_codes(meta: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="scp_codes"):
        concept_records(meta.drop(columns="scp_codes"), {"statement": "LVH"})


# --- run_tcav on ecgx models ----------------------------------------------------------------


def _data(seed: int, length: int = 250) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "concepts": {
            "a": torch.randn(8, 12, length, generator=g),
            "b": torch.randn(6, 12, length, generator=g) + 1.0,
        },
        "random_inputs": torch.randn(16, 12, length, generator=g),
        "inputs": torch.randn(6, 12, length, generator=g),
    }


def _check_table(result: TCAVResult, layers: list[str], n_sets: int) -> pd.DataFrame:
    table = result.table()
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * len(layers)
    assert sorted(zip(table.concept, table.layer)) == sorted(
        (c, layer) for c in ("a", "b") for layer in layers
    )
    for col in ("score_mean", "magnitude_mean", "random_mean", "p_value", "cav_accuracy_mean"):
        assert table[col].between(0.0, 1.0).all(), col
    assert (table.n_sets == n_sets).all()
    assert (table.target == 1).all()
    return table


@pytest.mark.parametrize(
    ("name", "layers"),
    [
        ("xai_lenet", None),
        ("xai_lenet", ["features.bn3", "features.bn2"]),
        ("compact_resnet", None),
        pytest.param("resnet1d_wang", ["stages.2.0", "stages.1"], marks=pytest.mark.slow),
    ],
)
def test_run_tcav_on_ecgx_models(name: str, layers: list[str] | None, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its scratch folder goes
    torch.manual_seed(0)
    model = build(name, num_classes=2).train()
    d = _data(0)
    kwargs = dict(n_random_sets=3, seed=5)
    result = run_tcav(model, layers, 1, d["concepts"], d["random_inputs"], d["inputs"], **kwargs)
    table = _check_table(result, layers or [model.target_layer], 3)
    assert model.training  # the caller's mode is restored
    # Same seed, same answer (a fresh cache directory, so nothing was read back from disk).
    again = run_tcav(model, layers, 1, d["concepts"], d["random_inputs"], d["inputs"], **kwargs)
    pd.testing.assert_frame_equal(table, again.table())
    assert result.to_dict()["rows"][0]["scores"] == again.to_dict()["rows"][0]["scores"]
    assert not list(tmp_path.iterdir())  # the CAVs written to disk are gone


def test_run_tcav_does_not_reuse_cavs_across_runs(tmp_path) -> None:
    """Same save_path, different concept data: captum keys its cache by concept id and layer,
    so a reused id would silently return the first run's CAVs."""
    torch.manual_seed(0)
    model = build("xai_lenet", num_classes=2)
    d = _data(0)
    first = run_tcav(model, None, 1, d["concepts"], d["random_inputs"], d["inputs"],
                     n_random_sets=3, save_path=str(tmp_path))  # fmt: skip
    flipped = {"a": -d["concepts"]["a"] * 3, "b": d["concepts"]["b"]}
    second = run_tcav(model, None, 1, flipped, d["random_inputs"], d["inputs"],
                      n_random_sets=3, save_path=str(tmp_path))  # fmt: skip
    assert first.rows[0].magnitudes != second.rows[0].magnitudes
    assert first.rows[1].magnitudes == second.rows[1].magnitudes  # concept b did not change


def test_run_tcav_argument_errors() -> None:
    model = build("xai_lenet", num_classes=2)
    d = _data(0)
    args = (d["concepts"], d["random_inputs"], d["inputs"])
    with pytest.raises(ValueError, match="unknown layers"):
        run_tcav(model, ["features.nope"], 1, *args)
    with pytest.raises(ValueError, match="n_random_sets"):
        run_tcav(model, None, 1, *args, n_random_sets=1)
    with pytest.raises(ValueError, match="unknown classifier"):
        run_tcav(model, None, 1, *args, classifier="svm")


# --- a known answer: a model trained to detect a square bump in V1 --------------------------

V1 = 6
LENGTH = 200


class Tiny(nn.Module):
    """Conv -> ReLU -> global max pool -> linear: a bump detector learns in a few dozen steps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(12, 8, kernel_size=9, padding=4)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.act(self.conv(x))).flatten(1))


def _records(n: int, bump: bool, g: torch.Generator) -> torch.Tensor:
    x = 0.3 * torch.randn(n, 12, LENGTH, generator=g)
    if bump:
        starts = torch.randint(10, LENGTH - 40, (n,), generator=g)
        for i, s in enumerate(starts.tolist()):
            x[i, V1, s : s + 25] += 2.0
    return x


@pytest.fixture(scope="module")
def bump_model() -> tuple[nn.Module, torch.Generator]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([_records(64, False, g), _records(64, True, g)])
    y = torch.cat([torch.zeros(64), torch.ones(64)]).long()
    model = Tiny()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    test = torch.cat([_records(32, False, g), _records(32, True, g)])
    acc = (model(test).argmax(1) == torch.cat([torch.zeros(32), torch.ones(32)])).float().mean()
    assert acc > 0.95, f"the bump detector did not learn (accuracy {acc:.2f})"
    return model, g


@pytest.mark.slow
def test_tcav_finds_the_feature_the_model_uses(bump_model) -> None:
    model, g = bump_model
    concepts = {"bump": _records(30, True, g), "noise": _records(30, False, g)}
    random_inputs = _records(60, False, g)
    inputs = _records(40, True, g)  # class-1 records
    result = run_tcav(model, ["conv", "act"], 1, concepts, random_inputs, inputs,
                      n_random_sets=10, seed=0)  # fmt: skip
    table = result.table().set_index(["concept", "layer"])
    for layer in ("conv", "act"):
        bump, noise = table.loc[("bump", layer)], table.loc[("noise", layer)]
        assert bump.score_mean > 0.8 and bump.magnitude_mean > 0.8, (layer, bump)
        assert bump.p_value < 0.05, (layer, bump)
        assert bump.cav_accuracy_mean > 0.75  # the bump is linearly visible (chance 0.5)
        assert noise.p_value > 0.05, (layer, noise)
