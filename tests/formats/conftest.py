"""The real format samples in ../shared/ecg-samples; tests skip where a folder is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLES


def sample(folder: str, name: str) -> Path:
    """A real sample file; skips the test where the shared samples are absent."""
    path = SAMPLES / folder / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


def assert_limb_leads(signal: np.ndarray, leads: tuple[str, ...], atol: float = 1e-5) -> None:
    """Einthoven's and Goldberger's identities from I and II."""
    one, two = signal[leads.index("I")], signal[leads.index("II")]
    np.testing.assert_allclose(signal[leads.index("III")], two - one, atol=atol)
    np.testing.assert_allclose(signal[leads.index("aVR")], -(one + two) / 2, atol=atol)
    np.testing.assert_allclose(signal[leads.index("aVL")], one - two / 2, atol=atol)
    np.testing.assert_allclose(signal[leads.index("aVF")], two - one / 2, atol=atol)
