"""Scatter plots of embedding maps: interactive HTML (plotly) and static PNG (matplotlib).

Inputs are a coordinate array (N, 2) or (N, 3) (e.g. from
:func:`brain.methods.visualization.compute_visualization`), the N sample ids
(shown on hover) and optional per-sample ``columns`` (a mapping of name to an
array of N values). ``color_by`` names the column that colors the points:

* a floating-point column (uniqueness, mistakenness, familiarity...) is
  continuous: Viridis color scale with a color bar (NaN: gray in the PNG,
  plotly's missing-value color in the HTML);
* any other column (labels, splits, integers, booleans, strings) is
  categorical: one legend entry per value, colors from the 20-color palette
  below (cycled). Above 40 values the legend is dropped and points are colored
  by value code, to keep huge label sets drawable.

``size_by`` names a numeric column scaled linearly to marker sizes of 4 to 16
px (NaN and infinite values: the smallest). ``highlight`` outlines a subset of
rows (e.g. the unique samples of :func:`visualize_unique`) on top of the map.

The HTML embeds plotly.js (``include_plotlyjs=True``), so it opens offline;
it holds every point, so subsample maps of millions of rows first. 2-D maps
above 20,000 points use WebGL (``scattergl``). The PNG is drawn with
matplotlib's Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["visualize_unique", "write_scatter"]

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
    "#dbdb8d", "#9edae5",
)  # fmt: skip
_MAX_LEGEND = 40
_WEBGL_ABOVE = 20_000
_SIZE_RANGE_PX = (4.0, 16.0)
_DEFAULT_SIZE_PX = 6.0
_HIGHLIGHT_COLOR = "#000000"


def write_scatter(
    coords: np.ndarray,
    ids: Sequence[Any] | np.ndarray,
    *,
    html_path: str | Path | None = None,
    png_path: str | Path | None = None,
    columns: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    color_by: str | None = None,
    size_by: str | None = None,
    highlight: Sequence[int] | np.ndarray | None = None,
    highlight_name: str = "highlighted",
    title: str = "",
    png_size: tuple[int, int] = (1000, 800),
) -> list[Path]:
    """Write the map as HTML and/or PNG; returns the written paths (HTML first).

    ``highlight`` holds row indices into ``coords`` drawn as open black circles,
    named ``highlight_name`` in the legend. ``png_size`` is in pixels.
    """
    if html_path is None and png_path is None:
        raise ValueError("give html_path, png_path or both")
    spec = _Spec(coords, ids, columns, color_by, size_by, highlight, highlight_name, title)
    if not (len(png_size) == 2 and all(isinstance(v, int) and v >= 100 for v in png_size)):
        raise ValueError(f"png_size must be two integers >= 100 (pixels), got {png_size!r}")
    written = []
    if html_path is not None:
        written.append(_write_html(spec, Path(html_path)))
    if png_path is not None:
        written.append(_write_png(spec, Path(png_path), png_size))
    return written


def visualize_unique(
    coords: np.ndarray,
    ids: Sequence[Any] | np.ndarray,
    unique_indices: Sequence[int] | np.ndarray,
    *,
    html_path: str | Path | None = None,
    png_path: str | Path | None = None,
    columns: Mapping[str, Sequence[Any] | np.ndarray] | None = None,
    color_by: str | None = None,
    size_by: str | None = None,
    title: str = "Unique samples",
    png_size: tuple[int, int] = (1000, 800),
) -> list[Path]:
    """The map with the rows ``unique_indices`` outlined as "unique"; see :func:`write_scatter`."""
    return write_scatter(
        coords,
        ids,
        html_path=html_path,
        png_path=png_path,
        columns=columns,
        color_by=color_by,
        size_by=size_by,
        highlight=unique_indices,
        highlight_name="unique",
        title=title,
        png_size=png_size,
    )


class _Spec:
    """Validated inputs, with colors and sizes resolved once for both writers."""

    def __init__(
        self,
        coords: np.ndarray,
        ids: Sequence[Any] | np.ndarray,
        columns: Mapping[str, Sequence[Any] | np.ndarray] | None,
        color_by: str | None,
        size_by: str | None,
        highlight: Sequence[int] | np.ndarray | None,
        highlight_name: str,
        title: str,
    ) -> None:
        xyz = np.asarray(coords, dtype=np.float64)
        if xyz.ndim != 2 or xyz.shape[1] not in (2, 3):
            raise ValueError(f"coords must have shape (N, 2) or (N, 3), got {xyz.shape}")
        n = xyz.shape[0]
        if n == 0:
            raise ValueError("coords has no rows")
        bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
        if bad.size:
            raise ValueError(f"coords has NaN or infinite values in rows {bad[:10].tolist()}")
        self.xyz, self.n = xyz, n
        self.ids = np.asarray(ids).astype(str)
        if self.ids.shape != (n,):
            raise ValueError(f"ids must hold {n} values (one per row of coords), got shape {self.ids.shape}")
        table = {name: np.asarray(values) for name, values in (columns or {}).items()}
        for name, values in table.items():
            if values.shape != (n,):
                raise ValueError(f"columns[{name!r}] must hold {n} values, got shape {values.shape}")
        for field, name in (("color_by", color_by), ("size_by", size_by)):
            if name is not None and name not in table:
                raise ValueError(f"{field}={name!r} is not in columns {sorted(table)}")
        self.title, self.color_by, self.size_by = title, color_by, size_by
        self.hover_names = [name for name in (color_by, size_by) if name is not None]
        self.hover = [table[name] for name in self.hover_names]

        self.continuous: np.ndarray | None = None
        self.categories: np.ndarray | None = None  # distinct values, in legend order
        self.codes: np.ndarray | None = None  # per row, index into categories
        if color_by is not None:
            values = table[color_by]
            if values.dtype.kind == "f":
                self.continuous = values.astype(np.float64)
            else:
                self.categories, self.codes = np.unique(values.astype(str), return_inverse=True)

        self.sizes = np.full(n, _DEFAULT_SIZE_PX)
        if size_by is not None:
            values = table[size_by]
            if values.dtype.kind not in "iufb":
                raise ValueError(f"size_by column {size_by!r} must be numeric, got dtype {values.dtype}")
            values = values.astype(np.float64)
            finite = np.isfinite(values)
            low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
            unit = (values - low) / (high - low) if high > low else np.full(n, 0.5)
            lo_px, hi_px = _SIZE_RANGE_PX
            self.sizes = np.where(finite, lo_px + unit * (hi_px - lo_px), lo_px)

        self.highlight = np.zeros(0, dtype=np.int64)
        if highlight is not None:
            rows = np.asarray(highlight)
            if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
                raise ValueError(f"highlight must be a 1-D array of row indices, got {rows.dtype} {rows.shape}")
            if rows.size and (rows.min() < 0 or rows.max() >= n):
                raise ValueError(f"highlight indices must be in [0, {n}), got range [{rows.min()}, {rows.max()}]")
            self.highlight = np.unique(rows.astype(np.int64))
        self.highlight_name = highlight_name

    @property
    def dims(self) -> int:
        return self.xyz.shape[1]

    def groups(self) -> list[tuple[str | None, np.ndarray, Any]]:
        """(legend name or None, row indices, color: a hex string or a per-row array)."""
        rows = np.arange(self.n)
        if self.categories is None:
            return [(None, rows, self.continuous if self.continuous is not None else PALETTE[0])]
        if self.categories.shape[0] > _MAX_LEGEND:
            return [(None, rows, np.asarray(PALETTE)[self.codes % len(PALETTE)])]
        return [
            (str(name), np.flatnonzero(self.codes == code), PALETTE[code % len(PALETTE)])
            for code, name in enumerate(self.categories)
        ]


def _write_html(spec: _Spec, path: Path) -> Path:
    import plotly.graph_objects as go

    def trace(rows: np.ndarray, name: str | None, marker: dict[str, Any], hover: bool) -> Any:
        coords = {axis: spec.xyz[rows, i] for i, axis in enumerate("xyz"[: spec.dims])}
        common: dict[str, Any] = {
            "mode": "markers",
            "marker": marker,
            "text": spec.ids[rows],
            "name": name or "",
            "showlegend": name is not None,
        }
        if hover and spec.hover:
            data = np.empty((rows.shape[0], len(spec.hover)), dtype=object)
            for i, column in enumerate(spec.hover):
                data[:, i] = column[rows]
            common["customdata"] = data
            lines = "".join(
                f"<br>{label}: %{{customdata[{i}]{':.4g' if column.dtype.kind == 'f' else ''}}}"
                for i, (label, column) in enumerate(zip(spec.hover_names, spec.hover))
            )
            common["hovertemplate"] = f"%{{text}}{lines}<extra>{name or ''}</extra>"
        else:
            common["hovertemplate"] = f"%{{text}}<extra>{name or ''}</extra>"
        if spec.dims == 3:
            return go.Scatter3d(**coords, **common)
        kind = go.Scattergl if spec.n > _WEBGL_ABOVE else go.Scatter
        return kind(**coords, **common)

    figure = go.Figure()
    for name, rows, color in spec.groups():
        marker: dict[str, Any] = {"size": spec.sizes[rows], "opacity": 0.8}
        if isinstance(color, str):
            marker["color"] = color
        elif color.dtype.kind == "f":
            colorbar = {"title": {"text": spec.color_by}}
            marker.update(color=color[rows], colorscale="Viridis", showscale=True, colorbar=colorbar)
        else:
            marker["color"] = color[rows]
        figure.add_trace(trace(rows, name, marker, hover=True))
    if spec.highlight.size:
        ring = {
            "size": spec.sizes[spec.highlight] + 6,
            "color": _HIGHLIGHT_COLOR,
            "symbol": "circle-open",
            "line": {"color": _HIGHLIGHT_COLOR, "width": 2},
        }
        figure.add_trace(trace(spec.highlight, spec.highlight_name, ring, hover=False))
    titles = {f"{axis}axis": {"title": {"text": f"dim {i + 1}"}} for i, axis in enumerate("xyz"[: spec.dims])}
    figure.update_layout(
        title={"text": spec.title},
        legend={"title": {"text": spec.color_by or ""}},
        template="plotly_white",
        **({"scene": titles} if spec.dims == 3 else titles),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def _write_png(spec: _Spec, path: Path, png_size: tuple[int, int]) -> Path:
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(png_size[0] / dpi, png_size[1] / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(projection="3d" if spec.dims == 3 else None)
    scale = float(np.clip(4000 / spec.n, 0.3, 1.0))  # shrink markers on dense maps
    legend = False
    for name, rows, color in spec.groups():
        points = [spec.xyz[rows, i] for i in range(spec.dims)]
        area = (spec.sizes[rows] * scale) ** 2
        if isinstance(color, str) or color.dtype.kind != "f":
            colors = color if isinstance(color, str) else color[rows]
            axes.scatter(*points, s=area, c=colors, label=name, alpha=0.8, linewidths=0)
            legend |= name is not None
        else:
            cmap = colormaps["viridis"].with_extremes(bad="#bbbbbb")
            artist = axes.scatter(
                *points, s=area, c=color[rows], cmap=cmap, plotnonfinite=True, alpha=0.8, linewidths=0
            )
            figure.colorbar(artist, ax=axes, label=spec.color_by)
    if spec.highlight.size:
        points = [spec.xyz[spec.highlight, i] for i in range(spec.dims)]
        area = (spec.sizes[spec.highlight] * scale + 5) ** 2
        axes.scatter(
            *points, s=area, facecolors="none", edgecolors=_HIGHLIGHT_COLOR, linewidths=1.2, label=spec.highlight_name
        )
        legend = True
    if legend:
        axes.legend(title=spec.color_by, loc="best", fontsize="small", markerscale=1.5)
    for i, setter in enumerate(("set_xlabel", "set_ylabel", "set_zlabel")[: spec.dims]):
        getattr(axes, setter)(f"dim {i + 1}")
    if spec.title:
        axes.set_title(spec.title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path

