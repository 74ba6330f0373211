"""A 12-lead record drawn as a paper ECG chart, the input of the vision seed (spec 2.3).

Drawing is done by hand in numpy rather than by matplotlib per record (a matplotlib figure
like the seed's costs about 0.6 s per record at 300 dpi): every pixel column of a trace is
filled between the trace's lowest and highest point near that column, widened to a round pen's
thickness, so a QRS upstroke steeper than a pixel stays connected; coverage is fractional at the
ends (anti-aliasing). What is the same for every record (grid, frame, lead names) is drawn once per
instance, the lead names with matplotlib's Agg text renderer, and only the ink pixels are
resampled per record.

Geometry follows the seed's ``ecg_plot``: lead ``column·rows + row`` of the canonical order sits
in row ``row`` with its baseline at −3·row mV and shows seconds [c·T, (c+1)·T) of the record; a
rhythm strip (the full ``columns·T`` s of lead II) sits below at −3·rows mV; the axes span
[0, columns·T] s × [1.5 − 3·bands, 1.5] mV. The paper scale (``mm_per_s``, ``mm_per_mv``) and
``dpi`` set the drawing's pixel size; ``size`` / ``height_px`` / ``width_px`` then resample it
(aspect not kept, like the seed's Resize to 224×224) with an antialiased bilinear filter.

The seed's own files are 300 dpi, 25.4 mm/s, and 7.62 mm/mV (layout 1) or 10.16 mm/mV
(layout 2), with 0.1 in of white border from ``bbox_inches='tight'`` (``pad_inches=0.1``);
see ``conf/transform/chart_layout{1,2}.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
from scipy import sparse

from ecgx.errors import ConfigValueError
from ecgx.formats.record import LEADS, RecordError
from ecgx.transforms.signal import OfflineTransform

# Bumped whenever the drawing changes, so caches of older drawings are not reused.
RENDER_VERSION = 1
LAYOUTS = {
    "4x2.5+II": {"columns": 4, "rows": 3, "seconds": 2.5, "rhythm": "II"},
    "2x5": {"columns": 2, "rows": 6, "seconds": 5.0, "rhythm": None},
}
MM_PER_INCH = 25.4
POINTS_PER_INCH = 72.0
BAND_MV = 3.0  # each row of the chart spans its baseline ± 1.5 mV
TOP_MV = 1.5
# The seed's colours (RGB in [0, 1]) and widths in points.
TRACE_RGB = (0.0, 0.0, 0.7)
MAJOR_RGB = (1.0, 0.0, 0.0)
MINOR_RGB = (1.0, 0.7, 0.7)
TEXT_RGB = (0.0, 0.0, 0.0)
FRAME_PT = 0.8  # matplotlib's default axes.linewidth: the spines stay in the seed's charts
MAJOR_S, MINOR_S = 0.2, 0.04
MAJOR_MV, MINOR_MV = 0.5, 0.1
SEPARATOR_MV = 0.3
CHANNEL_NAMES = {3: ("R", "G", "B"), 1: ("L",)}


class ChartImage(OfflineTransform):
    """Render ``(12, samples)`` mV, canonical lead order, into a paper-ECG picture.

    :meth:`render` gives the picture, float32 ``(channels, H, W)`` in [0, 1], white paper = 1.
    Called as an offline transform (``(x, fs) -> (x, fs)``) it returns the picture as
    ``(channels, H·W)``, the ``(rows, samples)`` form the signal cache stores back to back, and
    :meth:`output_leads` names the rows ``R, G, B`` (or ``L``), so the cache and the DataModule
    count 3 (or 1) input channels. ``fs`` is passed through unchanged (it keys
    :meth:`pixel_to_lead_time`). A consumer reshapes a cached row block with :meth:`to_image`,
    e.g. ``chart.to_image(cache[i])`` -> (C, H, W), which is ``cache[i].reshape(C, H, W)``.

    Args:
        layout: ``4x2.5+II`` (4 columns × 2.5 s + a lead II rhythm strip) or ``2x5``
            (2 columns × 5 s).
        dpi: pixels per inch of the drawing before resampling; line widths are in points.
        mm_per_s, mm_per_mv: paper speed and gain.
        grid: draw the 0.04 s × 0.1 mV / 0.2 s × 0.5 mV grid.
        size: output (H, W) (an int gives a square); or set ``height_px`` and/or ``width_px``
            (one alone keeps the aspect). None of them: the drawing's own size.
        linewidth_pt: width of traces, separators and grid lines (seed: 0.5 pt).
        lead_labels: write the lead names (DejaVu Sans 9 pt, as matplotlib's default).
        frame: draw the axes frame (black, 0.8 pt) the seed's charts keep.
        pad_inches: white border around the chart (seed: 0.1 from the tight bounding box).
        channels: 3 (RGB) or 1 (luminance, ITU-R 601 weights as PIL's "L").
        max_pixels: refuse drawings larger than this (a slip in dpi would exhaust memory).

    Records longer than ``columns·T`` s are drawn up to there; shorter ones leave blank paper.
    """

    def __init__(
        self,
        layout: str = "4x2.5+II",
        dpi: float = 300.0,
        mm_per_s: float = 25.0,
        mm_per_mv: float = 10.0,
        grid: bool = True,
        size: int | Sequence[int] | None = None,
        height_px: int | None = None,
        width_px: int | None = None,
        linewidth_pt: float = 0.5,
        lead_labels: bool = True,
        frame: bool = True,
        pad_inches: float = 0.0,
        channels: int = 3,
        max_pixels: int = 40_000_000,
    ) -> None:
        if layout not in LAYOUTS:
            raise ConfigValueError(
                f"ChartImage.layout must be one of {list(LAYOUTS)}, got {layout!r}"
            )
        if channels not in (1, 3):
            raise ConfigValueError(f"ChartImage.channels must be 1 or 3, got {channels}")
        for key, value in (("dpi", dpi), ("mm_per_s", mm_per_s), ("mm_per_mv", mm_per_mv)):
            if not value > 0:
                raise ConfigValueError(f"ChartImage.{key} must be positive, got {value}")
        if size is not None and (height_px is not None or width_px is not None):
            raise ConfigValueError("ChartImage: give size or height_px/width_px, not both")
        self.layout = layout
        self.dpi = float(dpi)
        self.mm_per_s = float(mm_per_s)
        self.mm_per_mv = float(mm_per_mv)
        self.grid = bool(grid)
        # Plain ints/lists: the settings are part of the cache key, written as JSON.
        if size is None:
            self.size = None
        elif isinstance(size, int | np.integer):
            self.size = [int(size), int(size)]
        else:
            self.size = [int(v) for v in size]
            if len(self.size) != 2:
                raise ConfigValueError(f"ChartImage.size must be an int or [H, W], got {size}")
        self.height_px = None if height_px is None else int(height_px)
        self.width_px = None if width_px is None else int(width_px)
        self.linewidth_pt = float(linewidth_pt)
        self.lead_labels = bool(lead_labels)
        self.frame = bool(frame)
        self.pad_inches = float(pad_inches)
        self.channels = int(channels)
        self.max_pixels = int(max_pixels)
        if self.native_shape[0] * self.native_shape[1] > self.max_pixels:
            raise ConfigValueError(
                f"ChartImage: a {self.native_shape} px drawing exceeds max_pixels="
                f"{self.max_pixels}; lower dpi"
            )

    # -- settings and geometry -----------------------------------------------------------------
    def _settings(self) -> dict:
        # Derived state (cached_property values) lives in __dict__ too; it is not a setting.
        return {k: v for k, v in vars(self).items() if k in _SETTINGS}

    def spec(self) -> dict:
        """Class name, renderer version and settings: the cache key part of this transform."""
        return {"name": type(self).__name__, "version": RENDER_VERSION, **self._settings()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({args})"

    def __getstate__(self) -> dict:
        # Pickled into DataLoader workers: send the settings, rebuild the layers there.
        return self._settings()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def _geometry(self) -> dict:
        return LAYOUTS[self.layout]

    @property
    def duration(self) -> float:
        """Seconds across the chart (columns × T)."""
        return self._geometry["columns"] * self._geometry["seconds"]

    @property
    def bands(self) -> int:
        """Rows of the chart, the rhythm strip included."""
        return self._geometry["rows"] + (1 if self._geometry["rhythm"] else 0)

    @property
    def px_per_s(self) -> float:
        return self.mm_per_s / MM_PER_INCH * self.dpi

    @property
    def px_per_mv(self) -> float:
        return self.mm_per_mv / MM_PER_INCH * self.dpi

    @property
    def pad_px(self) -> float:
        return self.pad_inches * self.dpi

    @property
    def native_shape(self) -> tuple[int, int]:
        """(H, W) of the drawing before resampling."""
        h = BAND_MV * self.bands * self.px_per_mv + 2 * self.pad_px
        w = self.duration * self.px_per_s + 2 * self.pad_px
        return max(1, round(h)), max(1, round(w))

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of :meth:`render`."""
        h, w = self.native_shape
        if self.size is not None:
            h, w = self.size
        elif self.height_px is not None and self.width_px is not None:
            h, w = self.height_px, self.width_px
        elif self.height_px is not None:
            h, w = self.height_px, max(1, round(w * self.height_px / h))
        elif self.width_px is not None:
            h, w = max(1, round(h * self.width_px / w)), self.width_px
        return self.channels, int(h), int(w)

    def lead_grid(self) -> list[list[int]]:
        """Lead index (canonical order) shown in each [band][column]; the rhythm band repeats
        its lead across columns."""
        g = self._geometry
        out = [[c * g["rows"] + r for c in range(g["columns"])] for r in range(g["rows"])]
        if g["rhythm"]:
            out.append([LEADS.index(g["rhythm"])] * g["columns"])
        return out

    def _x(self, t: np.ndarray | float) -> np.ndarray | float:
        return self.pad_px + np.asarray(t) * self.px_per_s

    def _y(self, mv: np.ndarray | float) -> np.ndarray | float:
        return self.pad_px + (TOP_MV - np.asarray(mv)) * self.px_per_mv

    # -- the transform -------------------------------------------------------------------------
    def __call__(self, x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
        image = self.render(x, fs)
        return image.reshape(image.shape[0], -1), fs

    def output_leads(self, leads: tuple[str, ...]) -> tuple[str, ...]:
        """The cached rows are the picture's colour channels, not leads."""
        if tuple(leads) != LEADS:
            raise ConfigValueError(
                f"transform ChartImage draws the leads {list(LEADS)} in order, got {list(leads)} "
                "(is there a LeadSubset before it?)"
            )
        return CHANNEL_NAMES[self.channels]

    def to_image(self, array: np.ndarray) -> np.ndarray:
        """The (C, H, W) picture from what :meth:`__call__` returned (any array with the
        picture's C·H·W values in order: the cache's ``(C, H·W)`` rows, a flat copy, ...)."""
        c, h, w = self.output_shape
        values = np.asarray(array)
        if values.size != c * h * w:
            raise ValueError(
                f"to_image: {values.size} values, a {c}×{h}×{w} picture has {c * h * w}"
            )
        return values.reshape(c, h, w)

    def render(self, x: np.ndarray, fs: float) -> np.ndarray:
        """The chart of one record as float32 (C, H, W) in [0, 1]."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != len(LEADS):
            raise RecordError(
                f"ChartImage: expected a 12-lead (leads, samples) record in canonical order, "
                f"got shape {x.shape}"
            )
        ink = self._trace_ink(x, float(fs))
        # The chart is base + ink·delta with base and delta the same for every record (the
        # grid under the traces, frame and names over them), and resampling is linear, so only
        # the ink pixels (a few percent) are resampled per record.
        h, w = self.native_shape
        flat = np.flatnonzero(ink > 0)  # on a bool mask: several times faster than on floats
        rows, cols = np.divmod(flat, w)
        amount = ink.reshape(-1)[flat]
        base, delta = self._layers
        image = base.copy()
        for ch in range(3):
            values = amount * delta[ch].reshape(-1)[flat]
            if self._resamplers is None:
                image[ch].reshape(-1)[flat] += values
            else:
                ry, rx = self._resamplers
                ink_ch = sparse.csr_matrix((values, (rows, cols)), shape=(h, w))
                image[ch] += (ry @ ink_ch @ rx.T).toarray()
        if self.channels == 1:
            image = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), image, axes=1)[None]
        return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)

    # -- explainers ----------------------------------------------------------------------------
    def pixel_to_lead_time(self, fs: float = 500.0) -> tuple[np.ndarray, np.ndarray]:
        """For every output pixel: the lead (canonical index) and sample the layout puts there.

        Returns ``(lead, sample)``, both int (H, W), −1 outside the chart area (border). A pixel
        belongs to the band whose baseline ± 1.5 mV contains it and to the column containing
        its time, so a large deflection drawn into a neighbouring band is credited to the
        band's own lead. ``sample`` is the index into the full record at rate ``fs`` of the
        pixel centre's time, as drawn (column c shows samples int(fs·c·T) onwards).
        """
        _, h_out, w_out = self.output_shape
        h, w = self.native_shape
        g = self._geometry
        # Pixel centres mapped into the drawing (the resampling is a pure scaling).
        xc = (np.arange(w_out) + 0.5) * (w / w_out)
        yc = (np.arange(h_out) + 0.5) * (h / h_out)
        t = (xc - self.pad_px) / self.px_per_s
        band = np.floor((yc - self.pad_px) / (BAND_MV * self.px_per_mv)).astype(int)
        column = np.floor(t / g["seconds"]).astype(int)
        inside_t = (t >= 0) & (t < self.duration)
        inside_b = (band >= 0) & (band < self.bands)
        column = np.clip(column, 0, g["columns"] - 1)
        start = np.floor(fs * column * g["seconds"]).astype(int)
        local = np.floor((t - column * g["seconds"]) * fs + 1e-9).astype(int)
        strip_sample = np.where(inside_t, start + local, -1)
        grid = np.array(self.lead_grid())
        lead = grid[np.clip(band, 0, self.bands - 1)][:, column]
        sample = np.broadcast_to(strip_sample, (h_out, w_out)).copy()
        if g["rhythm"]:
            # The rhythm strip is one continuous trace of the whole duration.
            full = np.where(inside_t, np.floor(t * fs + 1e-9).astype(int), -1)
            sample[band == self.bands - 1] = full
        valid = inside_b[:, None] & inside_t[None, :]
        return np.where(valid, lead, -1), np.where(valid, sample, -1)

    def project(self, attribution: np.ndarray, fs: float, n_samples: int) -> np.ndarray:
        """Sum an image attribution ((H, W) or (C, H, W), summed over C) into (12, n_samples)
        lead × time via :meth:`pixel_to_lead_time`; pixels outside the chart are dropped."""
        a = np.asarray(attribution, dtype=np.float64)
        if a.ndim == 3:
            a = a.sum(axis=0)
        if a.shape != self.output_shape[1:]:
            raise ValueError(f"project: attribution {a.shape} != picture {self.output_shape[1:]}")
        lead, sample = self.pixel_to_lead_time(fs)
        keep = (lead >= 0) & (sample >= 0) & (sample < n_samples)
        index = lead[keep] * n_samples + sample[keep]
        out = np.bincount(index, weights=a[keep], minlength=len(LEADS) * n_samples)
        return out.reshape(len(LEADS), n_samples)

    # -- drawing -------------------------------------------------------------------------------
    @property
    def _line_px(self) -> float:
        return self.linewidth_pt / POINTS_PER_INCH * self.dpi

    @cached_property
    def _layers(self) -> tuple[np.ndarray, np.ndarray]:
        """What is the same for every record: ``base``, the chart without traces (3, H_out,
        W_out), and ``delta`` (3, H, W), what full ink changes at each drawing pixel: the
        trace colour replaces the grid but stays under the frame and names (matplotlib's
        z-order in the seed)."""
        under = self._under()
        alpha = self._over_alpha()[None]
        over = np.array(TEXT_RGB, np.float32).reshape(3, 1, 1)
        trace = np.array(TRACE_RGB, np.float32).reshape(3, 1, 1)
        delta = (1 - alpha) * (trace - under)
        base = (1 - alpha) * under + alpha * over
        if self._resamplers is not None:
            ry, rx = self._resamplers
            c, h, w = base.shape
            tmp = ry @ base.transpose(1, 0, 2).reshape(h, c * w)  # (h_out, C·W)
            tmp = tmp.reshape(-1, c, w).transpose(1, 0, 2).reshape(-1, w)  # (C·h_out, W)
            base = (rx @ tmp.T).T.reshape(c, -1, rx.shape[0])  # (C, h_out, w_out)
        return np.ascontiguousarray(base, dtype=np.float32), delta.astype(np.float32)

    def _under(self) -> np.ndarray:
        """White paper with the grid, (3, H, W)."""
        h, w = self.native_shape
        img = np.ones((3, h, w), np.float32)
        if not self.grid:
            return img
        lw = self._line_px
        n_t = round(self.duration / MINOR_S)
        ticks_t = np.arange(n_t)  # in minor steps: 0 .. duration, the end excluded
        bottom = round((TOP_MV - BAND_MV * self.bands) / MINOR_MV)
        ticks_v = np.arange(bottom, round(TOP_MV / MINOR_MV))
        per = round(MAJOR_S / MINOR_S)
        # Grid lines are clipped to the axes: the border (pad_inches) stays white.
        axes_rows = _span_cover(self._y(TOP_MV), self._y(TOP_MV - BAND_MV * self.bands), h)
        axes_cols = _span_cover(self._x(0.0), self._x(self.duration), w)
        # matplotlib draws the x axis's grid (major, then minor) before the y axis's.
        for ticks, axis, major in (
            (ticks_t, "x", True),
            (ticks_t, "x", False),
            (ticks_v, "y", True),
            (ticks_v, "y", False),
        ):
            lines = ticks[(ticks % per == 0) == major]
            colour = np.array(MAJOR_RGB if major else MINOR_RGB, np.float32).reshape(3, 1, 1)
            if axis == "x":
                cover = _line_cover(self._x(lines * MINOR_S), lw, w)[None, :] * axes_rows[:, None]
            else:
                cover = _line_cover(self._y(lines * MINOR_MV), lw, h)[:, None] * axes_cols[None, :]
            img += cover[None] * (colour - img)
        return img

    def _over_alpha(self) -> np.ndarray:
        """Coverage of what lies above the traces: the frame and the lead names, (H, W)."""
        h, w = self.native_shape
        alpha = np.zeros((h, w), np.float32)
        if self.frame:
            fw = FRAME_PT / POINTS_PER_INCH * self.dpi
            x0, x1 = self._x(0.0), self._x(self.duration)
            y0, y1 = self._y(TOP_MV), self._y(TOP_MV - BAND_MV * self.bands)
            cols = _line_cover(np.array([x0, x1]), fw, w)
            rows = _line_cover(np.array([y0, y1]), fw, h)
            in_rows = _span_cover(y0 - fw / 2, y1 + fw / 2, h)
            in_cols = _span_cover(x0 - fw / 2, x1 + fw / 2, w)
            alpha = np.maximum(alpha, cols[None, :] * in_rows[:, None])
            alpha = np.maximum(alpha, rows[:, None] * in_cols[None, :])
        if self.lead_labels:
            alpha = np.maximum(alpha, self._label_alpha())
        return alpha

    def _label_alpha(self) -> np.ndarray:
        """Lead names rendered once with matplotlib's Agg canvas (fixed rc: reproducible)."""
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        h, w = self.native_shape
        g = self._geometry
        with matplotlib.rc_context():
            matplotlib.rcdefaults()  # a user's matplotlibrc must not change the pictures
            fig = Figure(figsize=(w / self.dpi, h / self.dpi), dpi=self.dpi)
            fig.patch.set_alpha(0.0)
            canvas = FigureCanvasAgg(fig)
            for band, row in enumerate(self.lead_grid()):
                columns = [0] if band == g["rows"] else range(g["columns"])
                for c in columns:
                    # The seed writes the name at (x0 + 0.07 s, baseline − 0.5 mV), 9 pt.
                    x = self._x(c * g["seconds"] + 0.07)
                    y = self._y(-BAND_MV * band - 0.5)
                    fig.text(x / w, 1 - y / h, LEADS[row[c]], fontsize=9, color="black")
            canvas.draw()
            rgba = np.asarray(canvas.buffer_rgba())
        # Agg sizes its buffer from figsize·dpi, which float rounding can leave a pixel short.
        alpha = np.zeros((h, w), np.float32)
        hh, ww = min(h, rgba.shape[0]), min(w, rgba.shape[1])
        alpha[:hh, :ww] = rgba[:hh, :ww, 3] / np.float32(255.0)
        return alpha

    def _trace_ink(self, x: np.ndarray, fs: float) -> np.ndarray:
        """Coverage (H, W) of every trace and column separator of one record."""
        h, w = self.native_shape
        ink = np.zeros((h, w), np.float32)
        g = self._geometry
        n = x.shape[1]
        per_column = int(fs * g["seconds"])
        half = self._line_px / 2
        # Traces are clipped to the axes, as matplotlib clips lines (not the border).
        top, bottom = self._y(TOP_MV), self._y(TOP_MV - BAND_MV * self.bands)
        grid = self.lead_grid()
        for band in range(g["rows"]):
            offset = -BAND_MV * band
            for c in range(g["columns"]):
                lead = grid[band][c]
                start = int(fs * c * g["seconds"])
                seg = x[lead, start : min(start + per_column, n)]
                if seg.size == 0:
                    continue
                xs = self._x(c * g["seconds"] + np.arange(seg.size) / fs)
                _draw_polyline(ink, xs, self._y(seg + offset), half, top, bottom)
                if c > 0:
                    # The seed's separator: ±0.3 mV around the lead's first sample of the
                    # record (index 0, not of this column), at the column's start.
                    v0 = x[lead, 0] + offset
                    _draw_vertical(
                        ink,
                        float(self._x(c * g["seconds"])),
                        float(self._y(v0 + SEPARATOR_MV)),
                        float(self._y(v0 - SEPARATOR_MV)),
                        half,
                        top,
                        bottom,
                    )
        if g["rhythm"]:
            lead = LEADS.index(g["rhythm"])
            seg = x[lead, : min(int(per_column * g["columns"]), n)]
            if seg.size:
                xs = self._x(np.arange(seg.size) / fs)
                offset = -BAND_MV * g["rows"]
                _draw_polyline(ink, xs, self._y(seg + offset), half, top, bottom)
        return ink

    @cached_property
    def _resamplers(self) -> tuple[sparse.csr_matrix, sparse.csr_matrix] | None:
        _, h_out, w_out = self.output_shape
        h, w = self.native_shape
        if (h_out, w_out) == (h, w):
            return None
        return _bilinear_weights(h, h_out), _bilinear_weights(w, w_out)


_SETTINGS = (
    "layout", "dpi", "mm_per_s", "mm_per_mv", "grid", "size", "height_px", "width_px",
    "linewidth_pt", "lead_labels", "frame", "pad_inches", "channels", "max_pixels",
)  # fmt: skip


def _span_cover(lo: float, hi: float, n: int) -> np.ndarray:
    """Fraction of each of n unit pixels inside [lo, hi]."""
    edges = np.arange(n, dtype=np.float64)
    return np.clip(np.minimum(edges + 1, hi) - np.maximum(edges, lo), 0.0, 1.0).astype(np.float32)


def _line_cover(centres: np.ndarray, width: float, n: int) -> np.ndarray:
    """Coverage along one axis of lines of ``width`` px centred at ``centres`` (max-combined)."""
    cover = np.zeros(n, np.float32)
    half = width / 2
    for centre in np.atleast_1d(centres):
        lo, hi = centre - half, centre + half
        a, b = max(0, int(np.floor(lo))), min(n, int(np.ceil(hi)))
        if a >= b:
            continue
        idx = np.arange(a, b, dtype=np.float64)
        part = np.clip(np.minimum(idx + 1, hi) - np.maximum(idx, lo), 0.0, 1.0)
        cover[a:b] = np.maximum(cover[a:b], part)
    return cover


def _draw_polyline(
    ink: np.ndarray, xs: np.ndarray, ys: np.ndarray, half: float, top: float, bottom: float
) -> None:
    """Max-combine a polyline drawn with a round pen of radius ``half`` into ``ink`` (pixels).

    Per pixel column, the polyline's lowest and highest point within ``half`` of the column
    centre (values at the window ends and every vertex inside), widened by
    half·(sqrt(1 + s²) − s) for the window's slope s: exactly a round pen's vertical extent
    2·half·sqrt(1 + s²) on a straight stretch, ``half`` on a flat one, the stroke's own length
    on a vertical one. Coverage is fractional at both ends (anti-aliasing).
    """
    h, w = ink.shape
    reach = max(half, 0.5)  # at least the pixel itself, however thin the line
    j0 = max(0, int(np.floor(xs[0] - half)))
    j1 = min(w, int(np.ceil(xs[-1] + half)))
    if j1 <= j0:
        return
    centres = np.arange(j0, j1, dtype=np.float64) + 0.5
    a = np.clip(centres - reach, xs[0], xs[-1])
    b = np.clip(centres + reach, xs[0], xs[-1])
    if xs.size == 1:
        lo = hi = np.full(len(centres), float(ys[0]))
    else:
        at_a, at_b = np.interp(a, xs, ys), np.interp(b, xs, ys)
        lo, hi = np.minimum(at_a, at_b), np.maximum(at_a, at_b)
        # Vertices strictly inside each window; windows overlap, so reduceat runs over
        # interleaved (start, stop) pairs and only the even results are kept.
        start = np.searchsorted(xs, a, side="right")
        stop = np.searchsorted(xs, b, side="left")
        inside = stop > start
        if inside.any():
            pairs = np.empty(2 * len(start), dtype=np.int64)
            pairs[0::2], pairs[1::2] = start, stop
            low = np.minimum.reduceat(np.append(ys, np.inf), pairs)[0::2]
            high = np.maximum.reduceat(np.append(ys, -np.inf), pairs)[0::2]
            lo = np.where(inside, np.minimum(lo, low), lo)
            hi = np.where(inside, np.maximum(hi, high), hi)
    width = b - a
    slope = np.divide(hi - lo, width, out=np.zeros_like(width), where=width > 0)
    extra = half * (np.sqrt(1.0 + slope * slope) - slope)
    _fill_columns(ink, j0, np.maximum(lo - extra, top), np.minimum(hi + extra, bottom))


def _draw_vertical(
    ink: np.ndarray, x: float, y0: float, y1: float, half: float, top: float, bottom: float
) -> None:
    h, w = ink.shape
    lo, hi = max(min(y0, y1) - half, top), min(max(y0, y1) + half, bottom)
    a, b = max(0, int(np.floor(x - half))), min(w, int(np.ceil(x + half)))
    if a >= b or hi <= lo:
        return
    cols = np.arange(a, b, dtype=np.float64)
    horizontal = np.clip(np.minimum(cols + 1, x + half) - np.maximum(cols, x - half), 0.0, 1.0)
    r0, r1 = max(0, int(np.floor(lo))), min(h, int(np.ceil(hi)))
    rows = np.arange(r0, r1, dtype=np.float64)[:, None]
    vertical = np.clip(np.minimum(rows + 1, hi) - np.maximum(rows, lo), 0.0, 1.0)
    ink[r0:r1, a:b] = np.maximum(ink[r0:r1, a:b], (vertical * horizontal).astype(np.float32))


def _fill_columns(ink: np.ndarray, j0: float, lo: np.ndarray, hi: np.ndarray) -> None:
    """Coverage of [lo_j, hi_j] in columns j0.. of ``ink``, restricted to the rows touched."""
    h = ink.shape[0]
    ok = hi > lo
    if not ok.any():
        return
    r0 = max(0, int(np.floor(lo[ok].min())))
    r1 = min(h, int(np.ceil(hi[ok].max())))
    if r1 <= r0:
        return
    rows = np.arange(r0, r1, dtype=np.float32)[:, None]
    lo32, hi32 = lo.astype(np.float32)[None], hi.astype(np.float32)[None]
    cover = np.clip(np.minimum(rows + 1, hi32) - np.maximum(rows, lo32), 0.0, 1.0)
    view = ink[r0:r1, j0 : j0 + len(lo)]
    np.maximum(view, cover, out=view)


def _bilinear_weights(n_in: int, n_out: int) -> sparse.csr_matrix:
    """(n_out, n_in) resampling matrix of PIL's antialiased bilinear (triangle) filter: the
    filter that torchvision's Resize applies to the seed's PNGs."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    rows, cols, vals = [], [], []
    for o, centre in enumerate(centres):
        a = max(0, int(np.floor(centre - support)))
        b = min(n_in, int(np.ceil(centre + support)))
        i = np.arange(a, b)
        wgt = np.maximum(0.0, 1.0 - np.abs(i + 0.5 - centre) / support)
        if wgt.sum() <= 0:
            i, wgt = np.array([min(n_in - 1, int(centre))]), np.array([1.0])
        rows.append(np.full(len(i), o))
        cols.append(i)
        vals.append(wgt / wgt.sum())
    return sparse.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_out, n_in),
    )
