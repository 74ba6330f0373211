"""Group options checked before Hydra composes: the closest option is named."""

from __future__ import annotations

import pytest

from ecgx.commands.overrides import check_group_choices, group_options
from ecgx.errors import ConfigValueError


def test_mistyped_option_names_the_closest() -> None:
    with pytest.raises(ConfigValueError, match=r"did you mean model=compact_resnet\?"):
        check_group_choices(["model=compact_resnt"])
    with pytest.raises(
        ConfigValueError, match=r"did you mean experiment=imle_net/ptbxl_mi_subdisease\?"
    ):
        check_group_choices(["+experiment=imle_net/ptbxl_mi_subdiseas"])
    with pytest.raises(ConfigValueError, match="dataset=zzz: no such option") as err:
        check_group_choices(["dataset=zzz"])
    assert "did you mean" not in str(err.value) and "synthetic_ptbxl" in str(err.value)


def test_valid_choices_keys_and_sweeps_pass() -> None:
    check_group_choices(["model=imle_net", "experiment=vision/chapman_stage1_head", "logger=none",
                         "model.lr=1", "seed=3", "model=a,b", "explainer=null",
                         "hydra/launcher=basic"])  # fmt: skip
    assert "_settings" not in group_options("explainer") and "saliency" in group_options(
        "explainer"
    )
