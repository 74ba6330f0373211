"""Figures of the explanation module: physical scale, colours, numbers and readability."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.text import Text

from ecgx.explain import plots
from ecgx.formats.record import LEADS

FS = 100.0
DPI = 30  # the tests check structure, not pixels: low dpi keeps them fast
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ecg(n_leads: int = 12, seconds: float = 10.0, fs: float = FS) -> np.ndarray:
    """Gaussian P, QRS and T waves at 1 Hz, with a lead-dependent amplitude, in mV."""
    t = np.arange(int(seconds * fs)) / fs
    phase = t % 1.0
    beat = (
        0.15 * np.exp(-0.5 * ((phase - 0.2) / 0.025) ** 2)
        + 1.2 * np.exp(-0.5 * ((phase - 0.4) / 0.012) ** 2)
        + 0.3 * np.exp(-0.5 * ((phase - 0.65) / 0.05) ** 2)
    )
    gains = np.linspace(-1.0, 1.5, n_leads)
    return gains[:, None] * beat[None, :]


def _attribution(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kernel = np.hanning(15) / np.hanning(15).sum()  # smooth, like real attributions
    return np.array([np.convolve(row, kernel, mode="same") for row in rng.standard_normal(shape)])


def _paper_axes(fig: Figure):
    return fig.axes[0]  # the paper is added first; a colourbar comes after it


def _texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


# --------------------------------------------------------------------------------------------
# every function: a Figure, and a PNG on disk


def _builders() -> dict[str, Callable[[], Figure]]:
    sig = _ecg()
    rng = np.random.default_rng(1)
    return {
        "ecg_paper": lambda: plots.ecg_paper(sig, FS, title="plain"),
        "ecg_paper_attr": lambda: plots.ecg_paper(sig, FS, attribution=_attribution(sig.shape)),
        "ecg_paper_3x4": lambda: plots.ecg_paper(sig, FS, layout="3x4"),
        "channel_importance": lambda: plots.channel_importance(
            rng.dirichlet(np.ones(12)), errors=np.full(12, 0.01)
        ),
        "heatmap": lambda: plots.heatmap(
            rng.random((5, 12)), [f"c{i}" for i in range(5)], list(LEADS), average_row=True
        ),
        "curves": lambda: plots.curves(np.linspace(0, 1, 11), {"a": np.linspace(1, 0, 11)}),
    }


@pytest.mark.parametrize("name", list(_builders()))
def test_each_function_returns_a_figure_that_saves_as_png(name: str, tmp_path: Path) -> None:
    fig = _builders()[name]()
    assert isinstance(fig, Figure)
    out = plots.save(fig, tmp_path / "sub" / f"{name}.png", dpi=DPI)
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 2_000


def test_attention_maps_returns_three_figures_that_save(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sig = _ecg()
    figs = plots.attention_maps(
        rng.random((12, 20, 13)),
        rng.dirichlet(np.ones(20), 12),
        rng.dirichlet(np.ones(12)),
        sig,
        FS,
    )
    assert set(figs) == {"beat", "rhythm", "channel"}
    for key, fig in figs.items():
        assert isinstance(fig, Figure)
        data = plots.save(fig, tmp_path / f"{key}.png", dpi=DPI).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 2_000


def test_attention_maps_overlay_is_the_imle_beat_map() -> None:
    rng = np.random.default_rng(3)
    beat, channel = rng.random((12, 20, 13)), rng.dirichlet(np.ones(12))
    sig = _ecg()
    fig = plots.attention_maps(beat, rng.random((12, 20)), channel, sig, FS)["beat"]
    expected = plots.imle_beat_map(beat, channel, sig.shape[1])
    drawn = np.vstack([np.asarray(im.get_array()) for im in _paper_axes(fig).images])
    np.testing.assert_allclose(drawn, expected)


# --------------------------------------------------------------------------------------------
# ECG paper: physical scale


MARGINS_MM = 20.0  # LEFT_MARGIN_MM + RIGHT_MARGIN_MM, stated here so that a change shows up


@pytest.mark.parametrize("seconds", [10.0, 6.0])
def test_ecg_paper_width_follows_25_mm_per_second(seconds: float) -> None:
    fig = plots.ecg_paper(_ecg(seconds=seconds), FS)
    assert plots.LEFT_MARGIN_MM + plots.RIGHT_MARGIN_MM == MARGINS_MM
    width_in = (seconds * 25.0 + MARGINS_MM) / 25.4
    assert fig.get_size_inches()[0] == pytest.approx(width_in)
    # The paper itself, not only the figure: 1 s is 25 mm.
    paper_w_in = _paper_axes(fig).get_position().width * fig.get_size_inches()[0]
    assert paper_w_in == pytest.approx(seconds * 25.0 / 25.4)


def test_ecg_paper_width_with_attribution_adds_the_colourbar_margin() -> None:
    sig = _ecg()
    fig = plots.ecg_paper(sig, FS, attribution=_attribution(sig.shape))
    width_in = (10.0 * 25.0 + MARGINS_MM + plots.COLORBAR_MARGIN_MM) / 25.4
    assert fig.get_size_inches()[0] == pytest.approx(width_in)


def test_ecg_paper_height_follows_10_mm_per_mv() -> None:
    sig = _ecg(n_leads=2)
    sig[1] *= 3.0  # a taller lead makes a taller row
    fig = plots.ecg_paper(sig, FS, leads=["I", "II"])
    ax = _paper_axes(fig)
    paper_h_mm = ax.get_position().height * fig.get_size_inches()[1] * 25.4
    lo, hi = ax.get_ylim()
    assert paper_h_mm == pytest.approx((hi - lo) * 10.0)
    assert (hi - lo) * 10.0 % 5.0 == pytest.approx(0.0)  # rows end on 5 mm lines
    ranges = sig.max(axis=1) - sig.min(axis=1)
    assert hi - lo >= ranges.sum()
    assert hi - lo <= ranges.sum() + 2 * 1.0 + 0.2  # at most one 5 mm block + pad per row


def test_ecg_paper_3x4_shows_each_lead_once_plus_a_lead_ii_rhythm_strip() -> None:
    fig = plots.ecg_paper(_ecg(seconds=12.0), FS, layout="3x4")
    labels = [t.get_text() for t in _paper_axes(fig).texts]
    assert sorted(labels) == sorted([*LEADS, "II"])
    # A printout shows 10 s whatever the record's length.
    assert fig.get_size_inches()[0] == pytest.approx((10.0 * 25.0 + MARGINS_MM) / 25.4)


@pytest.mark.parametrize("n_leads", [1, 5, 12])
@pytest.mark.parametrize("layout", ["12x1", "3x4"])
def test_ecg_paper_any_number_of_leads(n_leads: int, layout: str) -> None:
    leads = list(LEADS[:n_leads])
    fig = plots.ecg_paper(_ecg(n_leads=n_leads, seconds=3.0), FS, leads, layout=layout)
    labels = {t.get_text() for t in fig.findobj(Text)}
    assert set(leads) <= labels


def test_ecg_paper_rejects_bad_input() -> None:
    sig = _ecg(seconds=2.0)
    with pytest.raises(ValueError, match="layout"):
        plots.ecg_paper(sig, FS, layout="6x2")
    with pytest.raises(ValueError, match="lead names"):
        plots.ecg_paper(sig, FS, leads=["I", "II"])


def test_attribution_shape_mismatch_names_both_shapes() -> None:
    sig = _ecg(seconds=2.0)
    with pytest.raises(ValueError, match=r"\(12, 199\).*\(12, 200\)"):
        plots.ecg_paper(sig, FS, attribution=np.zeros((12, 199)))


# --------------------------------------------------------------------------------------------
# colour maps


def _overlay_mappables(fig: Figure) -> list:
    return list(_paper_axes(fig).images)


def test_signed_attribution_gets_a_diverging_map_centred_at_zero() -> None:
    sig = _ecg(seconds=2.0)
    attr = _attribution(sig.shape)
    assert attr.min() < 0 < attr.max()
    fig = plots.ecg_paper(sig, FS, attribution=attr)
    for im in _overlay_mappables(fig):
        assert im.cmap.name == plots.SIGNED_CMAP == "RdBu_r"
        assert im.norm.vmin == pytest.approx(-im.norm.vmax)
        assert im.norm.vmax == pytest.approx(np.abs(attr).max())
    assert "signed" in fig.axes[1].get_ylabel()


def test_unsigned_attribution_gets_a_sequential_map_from_zero() -> None:
    sig = _ecg(seconds=2.0)
    attr = np.abs(_attribution(sig.shape))
    fig = plots.ecg_paper(sig, FS, attribution=attr)
    for im in _overlay_mappables(fig):
        assert im.cmap.name == plots.UNSIGNED_CMAP == "Reds"
        assert im.norm.vmin == 0.0
        assert im.norm.vmax == pytest.approx(attr.max())


def test_signed_flag_overrides_the_automatic_choice() -> None:
    sig = _ecg(seconds=2.0)
    attr = _attribution(sig.shape)
    assert plots.ecg_paper(sig, FS, attribution=attr, signed=False).axes[0].images[0].cmap.name == (
        "Reds"
    )
    positive = np.abs(attr)
    fig = plots.ecg_paper(sig, FS, attribution=positive, signed=True)
    assert fig.axes[0].images[0].cmap.name == "RdBu_r"


def test_all_negative_attribution_counts_as_signed() -> None:
    sig = _ecg(seconds=2.0)
    fig = plots.ecg_paper(sig, FS, attribution=-np.abs(_attribution(sig.shape)) - 0.01)
    assert fig.axes[0].images[0].cmap.name == "RdBu_r"


# --------------------------------------------------------------------------------------------
# IMLE-Net beat map, worked by hand


def test_imle_beat_map_hand_worked_case() -> None:
    # 2 leads, 2 windows, 3 positions; 10 samples -> windows of 5, sampled at 0, .5, 1, 1.5, 2.
    beat = np.array(
        [
            [[0.0, 2.0, 4.0], [4.0, 4.0, 0.0]],  # -> [0 1 2 3 4], [4 4 4 2 0]
            [[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]],  # -> [1 1 1 1 1], [0 .5 1 .5 0]
        ]
    )
    channel = np.array([0.5, 2.0])
    # Times channel: lead 0 [0 .5 1 1.5 2 | 2 2 2 1 0], lead 1 [2 2 2 2 2 | 0 1 2 1 0];
    # min 0, max 2 -> divide by 2.
    expected = np.array(
        [
            [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0],
            [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 0.5, 0.0],
        ]
    )
    out = plots.imle_beat_map(beat, channel, 10)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out, expected)
    assert out.min() == 0.0 and out.max() == 1.0


def test_imle_beat_map_normalises_min_to_zero_and_max_to_one() -> None:
    beat = np.array([[[1.0, 3.0, 1.0], [2.0, 2.0, 2.0]], [[5.0, 5.0, 5.0], [1.0, 1.0, 1.0]]])
    out = plots.imle_beat_map(beat, np.array([1.0, 1.0]), 6)
    # Raw values 1..5: (v - 1) / 4.
    np.testing.assert_allclose(out[1], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(out[0], [0.0, 0.5, 0.0, 0.25, 0.25, 0.25])


def test_imle_beat_map_pads_the_remainder_and_handles_a_constant_map() -> None:
    beat = np.arange(12, dtype=float).reshape(2, 2, 3)
    out = plots.imle_beat_map(beat, np.ones(2), 11)  # 11 // 2 = 5: one sample left over
    assert out.shape == (2, 11)
    np.testing.assert_allclose(out[:, -1], out[:, -2])
    flat = plots.imle_beat_map(np.ones((2, 2, 3)), np.ones(2), 10)
    np.testing.assert_array_equal(flat, np.zeros((2, 10)))


def test_imle_beat_map_rejects_mismatched_channel() -> None:
    with pytest.raises(ValueError, match="channel"):
        plots.imle_beat_map(np.ones((2, 2, 3)), np.ones(3), 10)


# --------------------------------------------------------------------------------------------
# heatmap


def _cell_texts(fig: Figure) -> dict[tuple[int, int], Text]:
    ax = fig.axes[0]
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}


def test_heatmap_average_row_is_the_column_mean() -> None:
    matrix = np.array([[1.0, 2.0, 0.5], [3.0, 6.0, np.nan]])
    fig = plots.heatmap(matrix, ["NORM", "MI"], ["I", "II", "III"], average_row=True)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["NORM", "MI", "average"]
    cells = _cell_texts(fig)
    average = [float(cells[(2, c)].get_text()) for c in range(3)]
    assert average == pytest.approx([2.0, 4.0, 0.5])  # NaN ignored in the mean
    assert (1, 2) not in cells  # a NaN cell is left blank


def test_heatmap_without_average_row_has_only_the_data() -> None:
    fig = plots.heatmap(np.ones((2, 3)), ["a", "b"], ["x", "y", "z"])
    assert len(fig.axes[0].texts) == 6
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b"]


def test_heatmap_text_colour_contrasts_with_the_cell() -> None:
    fig = plots.heatmap(np.array([[0.0, 1.0]]), ["r"], ["low", "high"], signed=False)
    cells = _cell_texts(fig)
    assert cells[(0, 0)].get_color() == "black"  # white cell
    assert cells[(0, 1)].get_color() == "white"  # darkest red


def test_heatmap_signed_choice() -> None:
    signed = plots.heatmap(np.array([[-1.0, 2.0]]), ["r"], ["a", "b"])
    im = signed.axes[0].images[0]
    assert im.cmap.name.startswith("RdBu_r") and im.norm.vmin == -2.0 and im.norm.vmax == 2.0
    unsigned = plots.heatmap(np.array([[1.0, 2.0]]), ["r"], ["a", "b"])
    assert unsigned.axes[0].images[0].cmap.name.startswith("Reds")


def test_heatmap_rejects_label_count_mismatch() -> None:
    with pytest.raises(ValueError, match="labels"):
        plots.heatmap(np.ones((2, 3)), ["a"], ["x", "y", "z"])


# --------------------------------------------------------------------------------------------
# bars and curves


def test_channel_importance_bars_and_error_bars() -> None:
    values = np.linspace(0.01, 0.12, 12)
    fig = plots.channel_importance(values, errors=np.full(12, 0.005))
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, values)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LEADS)
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    with pytest.raises(ValueError, match="lead names"):
        plots.channel_importance(values[:5])


def test_curves_put_the_area_in_the_legend() -> None:
    x = np.linspace(0.0, 1.0, 11)
    fig = plots.curves(x, {"IG": x, "flat": np.ones(11)}, title="Deletion")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["IG (AUC 0.500)", "flat (AUC 1.000)"]
    plain = plots.curves(x, {"IG": x}, auc=False)
    assert [t.get_text() for t in plain.axes[0].get_legend().get_texts()] == ["IG"]
    with pytest.raises(ValueError, match="shape"):
        plots.curves(x, {"short": x[:5]})


# --------------------------------------------------------------------------------------------
# readability


@pytest.mark.parametrize("name", list(_builders()))
def test_no_text_below_8_points(name: str) -> None:
    fig = _builders()[name]()
    sizes = {t.get_text(): t.get_fontsize() for t in _texts(fig)}
    assert sizes and min(sizes.values()) >= 8, sizes


def _overlaps(texts: list[Text], renderer) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def test_long_heatmap_column_labels_do_not_overlap() -> None:
    cols = [f"long class name {i}" for i in range(10)]
    fig = plots.heatmap(np.random.default_rng(0).random((12, 10)), list(LEADS), cols)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    assert _overlaps(ax.get_xticklabels(), renderer) == []
    assert _overlaps(ax.get_yticklabels(), renderer) == []


def test_ecg_paper_lead_labels_and_header_do_not_overlap() -> None:
    fig = plots.ecg_paper(_ecg(seconds=2.0), FS, title="a title " * 12)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in _texts(fig) if t.figure is fig]
    assert _overlaps(_paper_axes(fig).texts + fig.texts, renderer) == []
    # Nothing leaves the figure (a wrapped long title included).
    fig_box = fig.bbox
    for t in texts:
        box = t.get_window_extent(renderer)
        assert box.x0 >= fig_box.x0 - 1 and box.x1 <= fig_box.x1 + 1, t.get_text()
