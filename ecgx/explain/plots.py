"""Figures of explanations, drawn to be read by a cardiologist.

Every function takes numpy arrays and returns a :class:`matplotlib.figure.Figure` built
without pyplot (no global figure registry, Agg rendering), so that thousands of figures can be
made in a worker without leaking memory; :func:`save` writes one to disk.

The ECG itself is drawn on standard ECG paper (:func:`ecg_paper`): 25 mm/s, 10 mm/mV, 1 mm
minor and 5 mm major grid, and the figure has the physical size of a printout, so a PNG saved
at any dpi and printed at 100 % can be measured with calipers.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")  # headless: runs on clusters and in CI without a display

import matplotlib.colors as mcolors  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ecgx.formats.record import LEADS  # noqa: E402

__all__ = [
    "COLORBAR_MARGIN_MM",
    "LEFT_MARGIN_MM",
    "MM_PER_MV",
    "MM_PER_S",
    "RIGHT_MARGIN_MM",
    "SIGNED_CMAP",
    "UNSIGNED_CMAP",
    "attention_maps",
    "channel_importance",
    "curves",
    "ecg_paper",
    "heatmap",
    "imle_beat_map",
    "save",
]

MM_PER_S = 25.0  # paper speed
MM_PER_MV = 10.0  # gain
MM_PER_INCH = 25.4
# Figure width = duration * MM_PER_S + LEFT_MARGIN_MM + RIGHT_MARGIN_MM (+ COLORBAR_MARGIN_MM
# with an attribution), never less than MIN_WIDTH_MM (the extra goes to the right margin).
LEFT_MARGIN_MM = 14.0  # lead labels of the 12x1 layout
RIGHT_MARGIN_MM = 6.0
COLORBAR_MARGIN_MM = 30.0  # gap, bar, tick labels and the rotated label
MIN_WIDTH_MM = 110.0
BOTTOM_MARGIN_MM = 14.0  # time tick labels and the axis label
HEADER_LINE_MM = 5.5  # one line of the header (title lines, then the scale line)

SIGNED_CMAP = "RdBu_r"  # red = evidence for the class, blue = against, white = none
UNSIGNED_CMAP = "Reds"  # white = unimportant; reads as "highlighted" on pink paper

_MINOR_GRID = "#f6c9c9"
_MAJOR_GRID = "#e58a8a"
_PAPER = "#fffafa"
_FONT = 9.0  # every text is >= 8 pt at the figure's physical size, whatever the dpi
_SMALL = 8.0
_LEVELS = 256  # colour levels of the trace highlighter (as many as a colormap has)
_LAYOUTS = {"12x1": "12x1", "3x4": "3x4", "4x3": "3x4"}  # "4x3" is read as 4 columns x 3 rows


# --------------------------------------------------------------------------------------------
# helpers


def _as_2d(signal: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(signal, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be (leads, samples) with >= 2 samples, got {arr.shape}")
    return arr


def _check_leads(leads: Sequence[str], n: int, what: str) -> list[str]:
    leads = list(leads)
    if len(leads) != n:
        raise ValueError(f"{what} has {n} leads but {len(leads)} lead names were given: {leads}")
    return leads


def _is_signed(values: np.ndarray, signed: bool | None) -> bool:
    if signed is not None:
        return bool(signed)
    # An all-negative map is signed too: a sequential colormap would paint its strongest
    # (most negative) values as the least important.
    return bool(np.nanmin(values) < 0) if np.isfinite(values).any() else False


def _norm(values: np.ndarray, signed: bool, vmax: float | None = None) -> mcolors.Normalize:
    finite = values[np.isfinite(values)]
    if signed:
        top = float(vmax) if vmax is not None else float(np.abs(finite).max(initial=0.0))
        top = top if top > 0 else 1.0
        return mcolors.Normalize(-top, top)  # symmetric: 0 is the colormap's neutral centre
    lo = min(0.0, float(finite.min(initial=0.0)))
    hi = float(vmax) if vmax is not None else float(finite.max(initial=0.0))
    return mcolors.Normalize(lo, hi if hi > lo else lo + 1.0)


def _compact(value: float) -> str:
    """Short cell text: 3 characters or so, whatever the magnitude."""
    if not np.isfinite(value):
        return ""
    mag = abs(value)
    if mag == 0:
        return "0"
    if mag >= 1000 or mag < 0.01:
        return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
    if mag >= 10:
        return f"{value:.0f}"
    return f"{value:.1f}" if mag >= 1 else f"{value:.2f}"


def _text_colour(rgba: Sequence[float]) -> str:
    # Relative luminance (sRGB weights): dark text on light cells, white on dark ones.
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def _text_width_in(text: str, size: float) -> float:
    # Good enough for sizing: an average glyph is ~0.6 em wide in DejaVu Sans.
    return len(text) * size * 0.6 / 72.0


def _mm(x: float) -> float:
    return x / MM_PER_INCH


# --------------------------------------------------------------------------------------------
# ECG paper


def _row_range(values: np.ndarray) -> tuple[float, float]:
    """Rows start and end on 5 mm lines so that every baseline lies on a major line."""
    finite = values[np.isfinite(values)]
    lo = float(finite.min(initial=0.0))
    hi = float(finite.max(initial=0.0))
    lo = min(math.floor((lo - 0.05) / 0.5) * 0.5, -0.5)
    hi = max(math.ceil((hi + 0.05) / 0.5) * 0.5, 0.5)
    return lo, hi


def _draw_grid(ax, span_s: float, y0: float, y1: float, faint: bool = False) -> None:
    n_x = int(round(span_s / 0.04))
    n_y = int(round((y1 - y0) / 0.1))
    minor, major = [], []
    for i in range(n_x + 1):
        x = min(i * 0.04, span_s)
        (major if i % 5 == 0 else minor).append([(x, y0), (x, y1)])
    for j in range(n_y + 1):
        y = y0 + j * 0.1
        (major if j % 5 == 0 else minor).append([(0.0, y), (span_s, y)])
    # Under an attribution the grid is paler, so that a red overlay is not mistaken for it.
    alpha = 0.55 if faint else 1.0
    ax.add_collection(
        LineCollection(minor, colors=_MINOR_GRID, linewidths=0.35, alpha=alpha, zorder=0)
    )
    ax.add_collection(
        LineCollection(major, colors=_MAJOR_GRID, linewidths=0.7, alpha=alpha, zorder=0.5)
    )


def _draw_trace(
    ax,
    t: np.ndarray,
    y: np.ndarray,
    attr: np.ndarray | None,
    cmap: mcolors.Colormap | None,
    norm: mcolors.Normalize | None,
    signed: bool,
    band: tuple[float, float],
) -> None:
    if attr is not None:
        # Two encodings of the same value, both translucent where the attribution is ~0 so
        # that the grid stays readable: a band over the row's height says *when* (it is seen
        # at a glance, even under a steep QRS), a thick "highlighter" under the black trace
        # says *which deflection*. The black trace stays legible whatever the colour.
        if signed:
            strength = np.abs(attr) / max(abs(norm.vmin), abs(norm.vmax))
        else:
            strength = (attr - norm.vmin) / (norm.vmax - norm.vmin)
        strength = np.clip(np.nan_to_num(strength), 0.0, 1.0)
        dt = (t[1] - t[0]) / 2 if t.size > 1 else 0.0
        ax.imshow(
            np.nan_to_num(attr)[None, :],
            cmap=cmap,
            norm=norm,
            alpha=(0.6 * strength)[None, :],
            extent=(t[0] - dt, t[-1] + dt, band[0], band[1]),
            aspect="auto",
            interpolation="nearest",
            zorder=1,
        )
        # One polyline per run of equal (quantised) colour: a smooth attribution gives a few
        # hundred paths instead of one per sample, which is what makes 12 x 5000 samples fast.
        vals = np.nan_to_num(0.5 * (attr[:-1] + attr[1:]))
        level = np.clip(np.round(norm(vals) * (_LEVELS - 1)), 0, _LEVELS - 1).astype(int)
        seg_strength = 0.5 * (strength[:-1] + strength[1:])
        alpha_level = np.round(np.clip(0.15 + 0.85 * seg_strength, 0, 1) * 16).astype(int)
        key = level * 17 + alpha_level
        cuts = np.flatnonzero(np.diff(key)) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [key.size]])
        points = np.stack([t, y], axis=1)
        colours = cmap(level[starts] / (_LEVELS - 1))
        colours[:, 3] = alpha_level[starts] / 16
        lines = [points[a : b + 1] for a, b in zip(starts, ends)]
        ax.add_collection(
            LineCollection(lines, colors=colours, linewidths=4.0, capstyle="round", zorder=2)
        )
    ax.plot(t, y, color="black", lw=0.7, zorder=3, solid_joinstyle="round")


def ecg_paper(
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str] = LEADS,
    attribution: np.ndarray | None = None,
    *,
    signed: bool | None = None,
    layout: str = "12x1",
    title: str | None = None,
    cmap: str | None = None,
    vmax: float | None = None,
    cbar_label: str = "Attribution",
) -> Figure:
    """Draw an ECG on standard ECG paper, optionally coloured by an attribution.

    Args:
        signal: ``(leads, samples)`` in mV (a 1-D array is one lead).
        fs: sampling rate in Hz.
        leads: one name per row of ``signal``.
        attribution: same shape as ``signal``; drawn as a coloured band under the trace.
        signed: diverging colormap (``SIGNED_CMAP``, limits ``±max|a|``) if True, sequential
            (``UNSIGNED_CMAP``, from 0) if False; ``None`` = signed when any value is negative.
        layout: ``"12x1"`` (one row per lead, whole record) or ``"3x4"`` (alias ``"4x3"``: the
            leads in columns of 3, ``min(duration, 10 s) / n_columns`` each, simultaneous in
            time as on a printout, plus a rhythm strip of lead II — or the first lead).
        title: header line above the paper.
        cmap: overrides the colormap chosen by ``signed``.
        vmax: colour limit (e.g. shared between explainers); default ``max|a|``.
        cbar_label: label of the colourbar.

    Returns:
        A figure of physical size ``duration · 25 mm/s + LEFT_MARGIN_MM + RIGHT_MARGIN_MM``
        (+ ``COLORBAR_MARGIN_MM`` with an attribution; at least ``MIN_WIDTH_MM``) wide, and
        ``10 mm/mV`` times the rows' amplitude ranges (rounded out to 5 mm) plus header and
        footer tall.

    Raises:
        ValueError: bad shapes, lead names or layout; an attribution whose shape differs from
            the signal's (both shapes in the message).
    """
    sig, names, layout, attr = _paper_inputs(signal, fs, leads, layout, attribution)
    strips = _place_strips(layout, sig.shape[1], fs, names)
    tops, baselines = _row_positions(sig, strips)
    overlay = _overlay(attr, signed, cmap, vmax)
    page = _page_layout(strips.span, float(tops[-1]), title, cbar_label, overlay)
    fig, ax = _paper_axes(page, strips.span, float(tops[-1]), faint=attr is not None)
    _draw_strips(ax, sig, fs, names, layout, strips, tops, baselines, overlay)
    _draw_time_axis(ax, strips.span, float(tops[-1]))
    _draw_header(fig, page, fs, sig.shape[1] / fs)
    if overlay.values is not None:
        _draw_colourbar(fig, page, overlay)
    return fig


def _paper_inputs(
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str],
    layout: str,
    attribution: np.ndarray | None,
) -> tuple[np.ndarray, list[str], str, np.ndarray | None]:
    """(signal, lead names, canonical layout name, attribution) checked against each other."""
    sig = _as_2d(signal, "signal")
    if fs <= 0:
        raise ValueError(f"fs must be positive, got {fs}")
    names = _check_leads(leads, sig.shape[0], "signal")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(_LAYOUTS)}, got {layout!r}")
    attr = None
    if attribution is not None:
        attr = np.asarray(attribution, dtype=float)
        if attr.ndim == 1 and sig.shape[0] == 1:
            attr = attr[None, :]
        if attr.shape != sig.shape:
            raise ValueError(
                f"attribution shape {np.shape(attribution)} does not match "
                f"signal shape {np.shape(signal)}"
            )
    return sig, names, _LAYOUTS[layout], attr


@dataclass(frozen=True)
class _Strips:
    """Which stretch of which lead goes in which row of the paper."""

    strips: list[tuple[int, int, int, int]]  # (lead index, first sample, end sample, row)
    span: float  # seconds of paper across
    n_rows: int  # drawn top to bottom
    col_edges: list[float]  # times of the column separators (3x4 only)


def _place_strips(layout: str, n_samples: int, fs: float, names: list[str]) -> _Strips:
    n_leads = len(names)
    duration = n_samples / fs
    if layout == "12x1":
        return _Strips([(i, 0, n_samples, i) for i in range(n_leads)], duration, n_leads, [])
    span = min(duration, 10.0)
    n_cols = math.ceil(n_leads / 3)
    per_col = min(3, n_leads)
    width = span / n_cols
    strips = []
    for i in range(n_leads):
        c, r = divmod(i, per_col)
        a = int(round(c * width * fs))
        b = min(n_samples, int(round((c + 1) * width * fs)) + 1)  # +1: columns touch
        strips.append((i, a, b, r))
    rhythm = names.index("II") if "II" in names else 0
    strips.append((rhythm, 0, min(n_samples, int(round(span * fs))), per_col))
    return _Strips(strips, span, per_col + 1, [c * width for c in range(1, n_cols)])


def _row_positions(sig: np.ndarray, strips: _Strips) -> tuple[np.ndarray, list[float]]:
    """(top edge of every row and the paper's bottom edge last, baseline of every row) in mV:
    each row is as tall as the widest swing of the strips in it."""
    ranges = [(-0.5, 0.5)] * strips.n_rows
    for i, a, b, r in strips.strips:
        lo, hi = _row_range(sig[i, a:b])
        ranges[r] = (min(ranges[r][0], lo), max(ranges[r][1], hi))
    tops = np.concatenate([[0.0], -np.cumsum([hi - lo for lo, hi in ranges])])
    baselines = [tops[r] - ranges[r][1] for r in range(strips.n_rows)]
    return tops, baselines


class _Overlay(NamedTuple):
    """The attribution and how it maps onto colours (all None without one)."""

    values: np.ndarray | None
    signed: bool
    cmap: mcolors.Colormap | None
    norm: mcolors.Normalize | None


def _overlay(
    attr: np.ndarray | None, signed: bool | None, cmap: str | None, vmax: float | None
) -> _Overlay:
    if attr is None:
        return _Overlay(None, False, None, None)
    is_signed = _is_signed(attr, signed)
    cmap_obj = matplotlib.colormaps[cmap or (SIGNED_CMAP if is_signed else UNSIGNED_CMAP)]
    return _Overlay(attr, is_signed, cmap_obj, _norm(attr, is_signed, vmax))


@dataclass(frozen=True)
class _Page:
    """The figure's physical layout, in mm."""

    fig_w: float
    fig_h: float
    paper_w: float
    paper_h: float
    bottom: float  # below the paper: time axis, or the part of a colourbar that overflows
    bar_h: float
    bar_label: str
    title_lines: list[str]

    def rect(self, x: float, y: float, w: float, h: float) -> tuple[float, ...]:
        """A box in mm as figure fractions."""
        return (x / self.fig_w, y / self.fig_h, w / self.fig_w, h / self.fig_h)


def _page_layout(
    span: float, y_bottom: float, title: str | None, cbar_label: str, overlay: _Overlay
) -> _Page:
    y_top = 0.0
    has_bar = overlay.values is not None
    paper_w = span * MM_PER_S
    paper_h = (y_top - y_bottom) * MM_PER_MV
    right = RIGHT_MARGIN_MM + (COLORBAR_MARGIN_MM if has_bar else 0.0)
    fig_w = max(LEFT_MARGIN_MM + paper_w + right, MIN_WIDTH_MM)
    header_width_chars = max(20, int((fig_w - LEFT_MARGIN_MM) / (0.6 * (_FONT + 1) * 0.3528)))
    title_lines = textwrap.wrap(title, header_width_chars) if title else []
    header = HEADER_LINE_MM * (len(title_lines) + 1) + 2.0
    bar_label = cbar_label + (" (signed)" if overlay.signed else "")
    # The colourbar is at least as tall as its rotated label; on a short strip it overflows the
    # paper, and the figure grows below so that the label never runs into the header.
    bar_h = max(min(paper_h, max(30.0, 0.5 * paper_h)), len(bar_label) * 1.9 + 4.0)
    bottom = BOTTOM_MARGIN_MM
    if has_bar:
        bottom = max(bottom, bar_h - paper_h + 4.0)
    fig_h = header + paper_h + bottom
    return _Page(fig_w, fig_h, paper_w, paper_h, bottom, bar_h, bar_label, title_lines)


def _paper_axes(page: _Page, span: float, y_bottom: float, faint: bool) -> tuple[Figure, Any]:
    """The figure at its physical size and the gridded paper in it (x in s, y in mV)."""
    fig = Figure(figsize=(_mm(page.fig_w), _mm(page.fig_h)))
    ax = fig.add_axes(page.rect(LEFT_MARGIN_MM, page.bottom, page.paper_w, page.paper_h))
    ax.set_xlim(0.0, span)
    ax.set_ylim(y_bottom, 0.0)
    ax.set_facecolor(_PAPER)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_color(_MAJOR_GRID)
    _draw_grid(ax, span, y_bottom, 0.0, faint=faint)
    return fig, ax


def _draw_strips(
    ax,
    sig: np.ndarray,
    fs: float,
    names: list[str],
    layout: str,
    strips: _Strips,
    tops: np.ndarray,
    baselines: list[float],
    overlay: _Overlay,
) -> None:
    t_all = np.arange(sig.shape[1]) / fs
    attr = overlay.values
    for i, a, b, r in strips.strips:
        _draw_trace(
            ax,
            t_all[a:b],
            sig[i, a:b] + baselines[r],
            None if attr is None else attr[i, a:b],
            overlay.cmap,
            overlay.norm,
            overlay.signed,
            (tops[r + 1], tops[r]),
        )
        if layout == "12x1":
            _label_row(ax, names[i], baselines[r])
        else:
            _label_column(ax, names[i], t_all[a], tops[r])
    for x in strips.col_edges:  # column separators, as on printouts
        for r in range(strips.n_rows - 1):
            ax.plot([x, x], [baselines[r] - 0.3, baselines[r] + 0.3], color="black", lw=1.0)


def _label_row(ax, name: str, baseline: float) -> None:
    """A 12x1 lead label: in the left margin, level with the baseline."""
    ax.annotate(
        name,
        xy=(0.0, baseline),
        xycoords=("axes fraction", "data"),
        xytext=(-5, 0),
        textcoords="offset points",
        ha="right",
        va="center",
        fontsize=_FONT + 1,
        fontweight="bold",
    )


def _label_column(ax, name: str, start: float, top: float) -> None:
    # Printout convention: the label sits at the start of its column, above the trace.
    ax.text(
        start + 0.04,
        top - 0.08,
        name,
        ha="left",
        va="top",
        fontsize=_FONT + 1,
        fontweight="bold",
        zorder=4,
        bbox={"boxstyle": "square,pad=0.1", "fc": _PAPER, "ec": "none", "alpha": 0.8},
    )


def _draw_time_axis(ax, span: float, y_bottom: float) -> None:
    ax.set_xlim(0.0, span)  # imshow autoscales; the paper's extent is fixed
    ax.set_ylim(y_bottom, 0.0)
    step = 1.0 if span >= 2 else 0.2
    ax.set_xticks(np.arange(0.0, span + 1e-9, step))
    ax.set_yticks([])
    ax.tick_params(axis="x", labelsize=_FONT, length=3, color=_MAJOR_GRID)
    ax.set_xlabel("Time (s)", fontsize=_FONT, labelpad=2)


def _draw_header(fig: Figure, page: _Page, fs: float, duration: float) -> None:
    """Title lines, then the scale line, left-aligned with the paper."""
    x_hdr = LEFT_MARGIN_MM / page.fig_w
    y = 1.0 - 1.5 / page.fig_h
    for line in page.title_lines:
        fig.text(x_hdr, y, line, ha="left", va="top", fontsize=_FONT + 1, fontweight="bold")
        y -= HEADER_LINE_MM / page.fig_h
    scale = f"25 mm/s   10 mm/mV   fs {fs:g} Hz   {duration:.2f} s   grid 0.04 s × 0.1 mV"
    fig.text(x_hdr, y, scale, ha="left", va="top", fontsize=_SMALL, color="#555555")


def _draw_colourbar(fig: Figure, page: _Page, overlay: _Overlay) -> None:
    """Right of the paper: centred on it, or top-aligned where it is taller than the paper."""
    if page.bar_h > page.paper_h:
        bar_y = page.bottom + page.paper_h - page.bar_h
    else:
        bar_y = page.bottom + (page.paper_h - page.bar_h) / 2
    cax = fig.add_axes(page.rect(LEFT_MARGIN_MM + page.paper_w + 5.0, bar_y, 4.0, page.bar_h))
    cbar = fig.colorbar(ScalarMappable(norm=overlay.norm, cmap=overlay.cmap), cax=cax)
    cbar.set_label(page.bar_label, fontsize=_FONT)
    cbar.ax.tick_params(labelsize=_SMALL)


# --------------------------------------------------------------------------------------------
# bars, heatmaps, curves


def channel_importance(
    values: np.ndarray,
    leads: Sequence[str] = LEADS,
    title: str = "Lead importance",
    ylabel: str = "Channel attention weight",
    *,
    errors: np.ndarray | None = None,
) -> Figure:
    """Bar chart of one value per lead, in the given (canonical) lead order.

    Args:
        values: ``(leads,)``, e.g. IMLE-Net's channel attention (sums to 1).
        leads: lead names, one per value.
        title: figure title.
        ylabel: y-axis label (with units where there are any).
        errors: optional ``(leads,)`` half-widths (e.g. std over records) drawn as error bars.
    """
    vals = np.asarray(values, dtype=float).ravel()
    names = _check_leads(leads, vals.size, "values")
    err = None if errors is None else np.asarray(errors, dtype=float).ravel()
    if err is not None and err.shape != vals.shape:
        raise ValueError(f"errors shape {err.shape} does not match values shape {vals.shape}")
    width = max(4.0, 0.9 + 0.42 * len(names))
    fig = Figure(figsize=(width, 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(names))
    # Limb and chest leads in two colours: the two groups look at the heart in different planes.
    colours = ["#4c72b0" if n.upper().startswith("V") else "#dd8452" for n in names]
    ax.bar(x, vals, yerr=err, color=colours, edgecolor="black", linewidth=0.5, capsize=3)
    top = float(np.nanmax(np.abs(vals + (0 if err is None else err)), initial=0.0)) or 1.0
    tips = vals if err is None else vals + np.sign(vals + (vals == 0)) * err
    for xi, v, tip in zip(x, vals, tips):
        if np.isfinite(v):
            ax.annotate(  # above the error bar's cap, where it cannot be struck through
                _compact(v),
                (xi, tip),
                xytext=(0, 2 if v >= 0 else -2),
                textcoords="offset points",
                ha="center",
                va="bottom" if v >= 0 else "top",
                fontsize=_SMALL,
            )
    lo = min(0.0, float(np.nanmin(vals, initial=0.0)))
    ax.set_ylim(lo * 1.18 if lo < 0 else 0.0, top * 1.18)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, names, fontsize=_FONT, rotation=0 if len(names) <= 16 else 90)
    ax.tick_params(axis="y", labelsize=_FONT)
    ax.set_xlabel("Lead", fontsize=_FONT)
    ax.set_ylabel(ylabel, fontsize=_FONT)
    ax.set_title(title, fontsize=_FONT + 1)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if any(c != colours[0] for c in colours):
        from matplotlib.patches import Patch

        ax.legend(
            handles=[Patch(color="#dd8452", label="limb"), Patch(color="#4c72b0", label="chest")],
            fontsize=_SMALL,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),  # outside: a tall bar can never hide under it
            frameon=False,
        )
    return fig


def heatmap(
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str = "",
    cbar_label: str = "",
    annotate: bool = True,
    signed: bool | None = None,
    average_row: bool = False,
    xlabel: str | None = None,
    ylabel: str | None = None,
    cmap: str | None = None,
) -> Figure:
    """Annotated heatmap, e.g. class × lead (population) or lead × segment (glocal) maps.

    Args:
        matrix: ``(rows, cols)``; NaN cells are grey and unannotated.
        row_labels, col_labels: one label per row / column.
        title: figure title.
        cbar_label: colourbar label (say what and in which unit).
        annotate: write each cell's value (compact format, colour chosen for contrast).
        signed: diverging colormap centred at 0 if True; ``None`` = signed when any value < 0.
        average_row: append a row "average" = column means (NaN ignored) under a separator.
        xlabel, ylabel: axis labels.
        cmap: overrides the colormap chosen by ``signed``.
    """
    mat, rows, cols = _heatmap_cells(matrix, row_labels, col_labels, average_row)
    n_r, n_c = mat.shape
    is_signed = _is_signed(mat, signed)
    norm = _norm(mat, is_signed)
    cmap_obj = matplotlib.colormaps[cmap or (SIGNED_CMAP if is_signed else UNSIGNED_CMAP)]
    cmap_obj = cmap_obj.with_extremes(bad="#d9d9d9")

    width, height, rotate = _heatmap_size(rows, cols, annotate, xlabel, ylabel)
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap_obj, norm=norm, aspect="auto")
    ax.set_xticks(np.arange(n_c), cols, fontsize=_FONT)
    ax.set_yticks(np.arange(n_r), rows, fontsize=_FONT)
    if rotate:
        # Vertical, not 45 degrees: upright neighbours can never overlap, however long.
        for lab in ax.get_xticklabels():
            lab.set(rotation=90, ha="center", va="top")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if average_row:
        ax.axhline(n_r - 1.5, color="white", lw=3)
        ax.get_yticklabels()[-1].set_fontweight("bold")
    if annotate:
        _annotate_cells(ax, mat, cmap_obj, norm)
    cbar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, shrink=min(1.0, 0.4 + 0.1 * n_r))
    cbar.set_label(cbar_label, fontsize=_FONT)
    cbar.ax.tick_params(labelsize=_SMALL)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=_FONT)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=_FONT)
    if title:
        # Wrapped to the figure's width: a long title would otherwise be cut at the edges.
        chars = max(20, int(width * 72 / ((_FONT + 1) * 0.6)))
        ax.set_title(textwrap.fill(title, chars), fontsize=_FONT + 1)
    return fig


def _heatmap_cells(
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    average_row: bool,
) -> tuple[np.ndarray, list[str], list[str]]:
    """The matrix and its labels checked against each other, the average row appended."""
    mat = np.asarray(matrix, dtype=float)
    if mat.ndim != 2:
        raise ValueError(f"matrix must be 2-D, got shape {mat.shape}")
    rows, cols = list(row_labels), list(col_labels)
    if len(rows) != mat.shape[0] or len(cols) != mat.shape[1]:
        raise ValueError(
            f"matrix shape {mat.shape} does not match {len(rows)} row and {len(cols)} col labels"
        )
    if average_row:
        with np.errstate(all="ignore"):
            counts = np.isfinite(mat).sum(axis=0)
            avg = np.where(counts > 0, np.nansum(mat, axis=0) / np.maximum(counts, 1), np.nan)
        mat = np.vstack([mat, avg])
        rows = [*rows, "average"]
    return mat, rows, cols


def _heatmap_size(
    rows: list[str], cols: list[str], annotate: bool, xlabel: str | None, ylabel: str | None
) -> tuple[float, float, bool]:
    """(width, height) in inches and whether the column labels stand upright.

    Sized from the content: cells wide enough for their text, labels get the room they need.
    """
    cell_w = 0.5 if annotate else 0.35
    cell_h = 0.32
    col_w_needed = max(_text_width_in(c, _FONT) for c in cols) if cols else 0.0
    rotate = col_w_needed > cell_w * 0.95
    row_label_w = max(_text_width_in(r, _FONT) for r in rows)
    col_label_h = (col_w_needed if rotate else 0.2) + 0.1
    width = max(3.5, row_label_w + len(cols) * cell_w + 1.4 + (0.3 if ylabel else 0.0))
    height = max(2.2, col_label_h + len(rows) * cell_h + 0.9 + (0.3 if xlabel else 0.0))
    return width, height, rotate


def _annotate_cells(ax, mat: np.ndarray, cmap: mcolors.Colormap, norm: mcolors.Normalize) -> None:
    n_r, n_c = mat.shape
    size = _FONT if n_c <= 20 else _SMALL
    for r in range(n_r):
        for c in range(n_c):
            v = mat[r, c]
            if np.isfinite(v):
                ax.text(
                    c,
                    r,
                    _compact(v),
                    ha="center",
                    va="center",
                    fontsize=size,
                    color=_text_colour(cmap(norm(v))),
                )


def curves(
    x: np.ndarray,
    ys: Mapping[str, np.ndarray],
    *,
    xlabel: str = "Fraction of features perturbed",
    ylabel: str = "Model output (probability)",
    title: str = "",
    auc: bool = True,
) -> Figure:
    """Deletion / insertion curves of several explainers on one set of axes.

    The area under each curve (trapezoidal, over ``x``) is in its legend entry; for deletion
    a lower area is better, for insertion a higher one.
    """
    xs = np.asarray(x, dtype=float).ravel()
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for name, y in ys.items():
        yv = np.asarray(y, dtype=float).ravel()
        if yv.shape != xs.shape:
            raise ValueError(f"curve {name!r} has shape {yv.shape} but x has shape {xs.shape}")
        label = f"{name} (AUC {np.trapezoid(yv, xs):.3f})" if auc else name
        ax.plot(xs, yv, lw=1.6, label=label)
    ax.set_xlabel(xlabel, fontsize=_FONT)
    ax.set_ylabel(ylabel, fontsize=_FONT)
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    ax.tick_params(labelsize=_FONT)
    ax.set_xlim(float(xs.min()), float(xs.max()))
    ax.grid(alpha=0.3)
    if ys:
        ax.legend(fontsize=_SMALL, loc="best", framealpha=0.85)
    return fig


# --------------------------------------------------------------------------------------------
# IMLE-Net


def imle_beat_map(beat: np.ndarray, channel: np.ndarray, n_samples: int) -> np.ndarray:
    """IMLE-Net's beat-level attention as a per-sample map (its ``inference.py``).

    Each window's ``positions`` weights are linearly interpolated to the window length
    ``n_samples // windows`` (``np.interp`` at ``linspace(0, positions - 1, window_len)``),
    the windows are laid end to end, each lead is multiplied by its channel weight and the
    whole map is min-max normalised to [0, 1] (all zeros if constant). Samples past
    ``windows * window_len`` (which IMLE-Net's windowing drops) repeat the last value.

    Args:
        beat: ``(leads, windows, positions)`` beat-attention weights.
        channel: ``(leads,)`` channel-attention weights.
        n_samples: length of the signal the map is drawn on.

    Returns:
        ``(leads, n_samples)`` array in [0, 1].
    """
    b = np.asarray(beat, dtype=float)
    ch = np.asarray(channel, dtype=float).ravel()
    if b.ndim != 3:
        raise ValueError(f"beat must be (leads, windows, positions), got shape {b.shape}")
    n_leads, n_windows, n_pos = b.shape
    if ch.shape != (n_leads,):
        raise ValueError(f"channel shape {ch.shape} does not match beat shape {b.shape}")
    window_len = n_samples // n_windows
    if window_len < 1:
        raise ValueError(f"n_samples={n_samples} is shorter than the {n_windows} windows")
    at = np.linspace(0, n_pos - 1, window_len)
    grid = np.arange(n_pos)
    tiles = np.array(
        [[np.interp(at, grid, b[i, w]) for w in range(n_windows)] for i in range(n_leads)]
    )
    out = tiles.reshape(n_leads, n_windows * window_len) * ch[:, None]
    if out.shape[1] < n_samples:
        out = np.pad(out, ((0, 0), (0, n_samples - out.shape[1])), mode="edge")
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


def attention_maps(
    beat: np.ndarray,
    rhythm: np.ndarray,
    channel: np.ndarray,
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str] = LEADS,
    *,
    title: str | None = None,
) -> dict[str, Figure]:
    """IMLE-Net's three attention levels for one record, as three figures.

    Separate figures because the ECG one has the physical size of ECG paper, which a shared
    canvas would break.

    Args:
        beat: ``(leads, windows, positions)`` beat attention.
        rhythm: ``(leads, windows)`` rhythm attention.
        channel: ``(leads,)`` channel attention.
        signal: ``(leads, samples)`` in mV.
        fs: sampling rate in Hz.
        leads: lead names.
        title: prefix of the three titles (e.g. the record id).

    Returns:
        ``{"beat": ECG paper with the beat map (:func:`imle_beat_map`) as overlay,
        "rhythm": leads × windows heatmap, "channel": bar chart of the channel weights}``.
    """
    sig = _as_2d(signal, "signal")
    names = _check_leads(leads, sig.shape[0], "signal")
    rh = np.asarray(rhythm, dtype=float)
    if rh.ndim != 2 or rh.shape[0] != sig.shape[0]:
        raise ValueError(f"rhythm shape {rh.shape} does not match signal shape {sig.shape}")
    prefix = f"{title}: " if title else ""
    beat_map = imle_beat_map(beat, channel, sig.shape[1])
    window_s = sig.shape[1] / fs / rh.shape[1]
    starts = [f"{w * window_s:g}" for w in range(rh.shape[1])]
    return {
        "beat": ecg_paper(
            sig,
            fs,
            names,
            beat_map,
            signed=False,
            title=f"{prefix}beat-level attention (× channel weight, min-max normalised)",
            cbar_label="Beat attention (0–1)",
        ),
        "rhythm": heatmap(
            rh,
            names,
            starts,
            title=f"{prefix}rhythm-level attention",
            cbar_label="Attention weight",
            annotate=rh.shape[1] <= 24,
            signed=False,
            xlabel=f"Window start (s), {window_s:g} s windows",
            ylabel="Lead",
        ),
        "channel": channel_importance(
            np.asarray(channel, dtype=float),
            names,
            title=f"{prefix}channel-level attention",
            ylabel="Attention weight (sums to 1)",
        ),
    }


# --------------------------------------------------------------------------------------------


def image_overlay(
    image: np.ndarray,
    attribution: np.ndarray,
    *,
    title: str | None = None,
    signed: bool | None = None,
    alpha: float = 0.5,
    vmax: float | None = None,
) -> Figure:
    """A chart picture (C, H, W) in [0, 1] with a per-pixel attribution (H, W) on top.

    The attribution is drawn with the same colour rules as :func:`ecg_paper` (diverging when
    signed), transparent where it is 0, so the chart stays readable under it.
    """
    img = np.asarray(image, dtype=float)
    img = img.transpose(1, 2, 0) if img.ndim == 3 else img
    a = np.asarray(attribution, dtype=float)
    if a.shape != img.shape[:2]:
        raise ValueError(f"attribution {a.shape} does not match the picture {img.shape[:2]}")
    is_signed = _is_signed(a, signed)
    norm = _norm(a, is_signed, vmax)
    cmap = matplotlib.colormaps[SIGNED_CMAP if is_signed else UNSIGNED_CMAP]
    rgba = cmap(norm(a))
    weight = np.abs(a) / (np.abs(a).max() or 1.0)
    rgba[..., 3] = alpha * np.clip(weight / (np.quantile(weight, 0.99) or 1.0), 0, 1)
    h, w = a.shape
    width = 7.0
    fig = Figure(figsize=(width + 1.2, width * h / w + (0.6 if title else 0.2)),
                 layout="constrained")  # fmt: skip
    ax = fig.add_subplot()
    ax.imshow(img if img.ndim == 3 and img.shape[2] == 3 else img.squeeze(), cmap="gray",
              vmin=0, vmax=1, interpolation="nearest")  # fmt: skip
    ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(textwrap.fill(title, 90), fontsize=_FONT)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.8)
    bar.set_label("Attribution (signed)" if is_signed else "Attribution", fontsize=_FONT)
    bar.ax.tick_params(labelsize=_SMALL)
    return fig


def save(fig: Figure, path: str | Path, dpi: float = 150) -> Path:
    """Write ``fig`` (PNG unless the suffix says otherwise) at ``dpi``, then close it.

    The figure is cleared afterwards: it is not registered with pyplot, so clearing is what
    "closing" means here, and it frees the artists at once in loops over many records.
    No ``bbox_inches="tight"``: it would change the physical size of ECG paper figures.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower() or "png"
    fig.savefig(path, dpi=dpi, format=fmt, facecolor="white")
    fig.clear()
    return path
