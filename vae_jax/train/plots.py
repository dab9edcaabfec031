"""PNG figures of a run (reconstructions, prior samples, curves, traversals)
and of a sweep (the rate-distortion plane, a beta x sigma2 heatmap).

Each function takes arrays (images ``[N, H, W, C]`` in [0, 1]) or sweep rows and
a path, and writes one labelled figure atomically. Uses matplotlib's Agg
backend: no display needed.
"""

import math
import os
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

_MARKERS = "osD^vPX*"


def _grid(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """Tiles ``[rows*cols, H, W, C]`` into one ``[rows*(H+1), cols*(W+1)]``."""
  images = np.asarray(images, np.float32)[..., 0]
  n, h, w = images.shape
  canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1), np.float32)
  for i in range(min(n, rows * cols)):
    r, c = divmod(i, cols)
    canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = (
      images[i]
    )
  return canvas


def _save(fig, path: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
  os.close(fd)
  fig.savefig(tmp, dpi=110, bbox_inches="tight")
  plt.close(fig)
  os.chmod(tmp, 0o644)
  os.replace(tmp, path)


def _show(ax, canvas, title):
  ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.set_title(title, fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])


def reconstructions(
  path: str, inputs: np.ndarray, outputs: np.ndarray, title: str
) -> None:
  """Test inputs (left) beside their reconstructions E[x|z] (right)."""
  n = len(inputs)
  cols = min(8, n)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(1, 2, figsize=(2 * 0.45 * cols + 1, 0.5 * rows + 1))
  _show(axes[0], _grid(inputs, rows, cols), "test inputs")
  _show(axes[1], _grid(outputs, rows, cols), "reconstructions E[x|z]")
  fig.suptitle(title, fontsize=10)
  _save(fig, path)


def samples(path: str, images: np.ndarray, title: str) -> None:
  """A square grid of decoder means for z drawn from the prior."""
  side = math.isqrt(len(images))
  fig, ax = plt.subplots(figsize=(0.45 * side + 1, 0.45 * side + 1))
  _show(ax, _grid(images, side, side), title)
  _save(fig, path)


def side_by_side(
  path: str, rows: list[tuple[str, np.ndarray, np.ndarray | None]], titles
) -> None:
  """Labelled rows of two image strips each: e.g. one decoder per row, its
  reconstructions (left) and prior samples (right). A row whose right
  strip is None shows the left one alone (e.g. the inputs).

  Args:
    path: the PNG.
    rows: ``(label, left [n, H, W, C], right [n, H, W, C] or None)``.
    titles: the two columns' titles.
  """
  n = max(len(left) for _, left, _ in rows)
  fig, axes = plt.subplots(
    len(rows), 2, figsize=(2 * 0.42 * n + 2.5, 0.5 * len(rows) + 0.8)
  )
  axes = np.atleast_2d(axes)
  titled = [False, False]  # each column's title goes on its first strip
  for r, (label, left, right) in enumerate(rows):
    for c, images in enumerate((left, right)):
      ax = axes[r, c]
      ax.set_xticks([])
      ax.set_yticks([])
      if images is None:
        ax.axis("off")
        continue
      ax.imshow(
        _grid(images, 1, n),
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
      )
      if not titled[c]:
        ax.set_title(titles[c], fontsize=9)
        titled[c] = True
    axes[r, 0].set_ylabel(
      label, rotation=0, ha="right", va="center", fontsize=8
    )
  _save(fig, path)


def latent_grid(
  path: str,
  images: np.ndarray,
  rows: int,
  cols: int,
  title: str,
  ylabel: str,
  xlabel: str,
) -> None:
  """A traversal (one latent dimension per row) or a 2-D manifold."""
  fig, ax = plt.subplots(figsize=(0.45 * cols + 1, 0.45 * rows + 1))
  _show(ax, _grid(images, rows, cols), title)
  ax.set_ylabel(ylabel, fontsize=8)
  ax.set_xlabel(xlabel, fontsize=8)
  _save(fig, path)


def curves(path: str, records: list[dict]) -> None:
  """Training loss and ELBO per epoch, test ELBO where evaluated, and rate
  and distortion: nats per example against epoch."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
  for ax, keys in (
    (left, ("train_loss", "train_elbo", "test_elbo")),
    (right, ("train_rate", "train_distortion", "test_rate", "test_distortion")),
  ):
    for key in keys:
      sign = -1 if key.endswith("elbo") else 1
      points = [
        (r["epoch"], sign * r[key]) for r in records if r.get(key) is not None
      ]
      if points:
        x, y = zip(*points)
        label = key.replace("_", " ").replace("elbo", "-ELBO")
        ax.plot(
          x, y, "o-" if key.startswith("test") else "-", ms=3, label=label
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  left.set_title("loss and negative ELBO (lower is better)", fontsize=9)
  right.set_title(
    "rate KL(q(z|x)||p(z)) and distortion -E log p(x|z)", fontsize=9
  )
  _save(fig, path)


def _padded_limits(
  values: np.ndarray, frac: float = 0.12
) -> tuple[float, float]:
  """Axis limits covering ``values`` with a margin of ``frac`` of their span.

  A span under a tenth of the values' magnitude (e.g. one point) is taken as
  that tenth (at least 0.1), so the margin never vanishes.
  """
  lo, hi = float(np.min(values)), float(np.max(values))
  span = max(hi - lo, 0.1 * max(abs(lo), abs(hi), 1.0))
  return lo - frac * span, hi + frac * span


def _iso_elbo_levels(totals: np.ndarray, n: int = 5) -> np.ndarray:
  """About ``n`` round values of -ELBO = rate + distortion, spanning ``totals``.

  The step is 1, 2, 2.5 or 5 times a power of ten, chosen so that the count of
  its multiples inside [min(totals), max(totals)] is closest to ``n`` (ties go
  to the coarser step). A range of zero width is widened by 5% of its value
  (at least 0.5 nats) each side.

  Args:
    totals: ``[m]`` rate + distortion of the points, nats per example.
    n: the number of levels wanted.

  Returns:
    ``[k]`` increasing levels in nats, k >= 1 for any non-empty ``totals``.
  """
  lo, hi = float(np.min(totals)), float(np.max(totals))
  if hi == lo:
    half = max(0.05 * abs(lo), 0.5)
    lo, hi = lo - half, hi + half
  exponent = math.floor(math.log10((hi - lo) / n))

  def candidate(step):
    first, last = math.ceil(lo / step), math.floor(hi / step)
    return (abs(last - first + 1 - n), -step), step, first, last

  _, step, first, last = min(
    (
      candidate(mantissa * 10.0**e)
      for e in range(exponent - 1, exponent + 2)
      for mantissa in (1, 2, 2.5, 5)
    ),
    key=lambda c: c[0],
  )
  # Rounding to 12 digits drops the float noise of k * step (e.g. 0.30000004).
  return np.array([float(f"{k * step:.12g}") for k in range(first, last + 1)])


def _log_cell_edges(values: np.ndarray) -> np.ndarray:
  """Cell edges around a sorted positive grid on a log axis.

  Inner edges are geometric midpoints sqrt(v[i] v[i+1]); the outer ones repeat
  the neighbouring ratio, v[0] sqrt(v[0] / v[1]) and v[-1] sqrt(v[-1] / v[-2]);
  a single value v gets [v / 2, 2 v].

  Args:
    values: ``[n]`` sorted, strictly increasing, > 0.

  Returns:
    ``[n + 1]`` increasing edges.
  """
  v = np.asarray(values, np.float64)
  if v.size == 1:
    return np.array([v[0] / 2, v[0] * 2])
  mids = np.sqrt(v[:-1] * v[1:])
  return np.concatenate([[v[0] ** 2 / mids[0]], mids, [v[-1] ** 2 / mids[-1]]])


def _constant_products(
  betas: np.ndarray, sigma2s: np.ndarray, rtol: float = 1e-9
) -> np.ndarray:
  """The distinct values of 2 sigma2 beta over the grid, increasing.

  Values within ``rtol`` (relative) of the last kept one count as the same.

  Args:
    betas: ``[nb]`` KL weights.
    sigma2s: ``[ns]`` decoder variances.
    rtol: relative tolerance of the deduplication.

  Returns:
    ``[k]`` increasing distinct products, k <= nb * ns.
  """
  products = np.sort(2 * np.outer(sigma2s, betas).ravel())
  kept = [products[0]]
  for p in products[1:]:
    if p - kept[-1] > rtol * kept[-1]:
      kept.append(p)
  return np.array(kept)


def _screen_angle(ax, p, q) -> float:
  """Angle in degrees on the page of the segment p -> q given in data units."""
  (x0, y0), (x1, y1) = ax.transData.transform([p, q])
  return math.degrees(math.atan2(y1 - y0, x1 - x0))


def _series_label(likelihood: str, sigma2) -> str:
  return likelihood if sigma2 is None else f"{likelihood} σ²={sigma2:g}"


def _draw_iso_elbo(ax, totals: np.ndarray) -> None:
  """Dashed lines rate + distortion = c, labelled, over the current limits.

  The levels span the points' totals, widened to at least half of the range
  the axes show so that a narrow sweep still gets lines to read off.
  """
  (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
  lo, hi = float(np.min(totals)), float(np.max(totals))
  min_span = 0.5 * ((x1 + y1) - (x0 + y0))
  if hi - lo < min_span:
    mid = (lo + hi) / 2
    lo, hi = mid - min_span / 2, mid + min_span / 2
  angle = _screen_angle(ax, (0.0, 0.0), (1.0, -1.0))
  for c in _iso_elbo_levels(np.array([lo, hi])):
    ax.axline((c, 0.0), slope=-1, ls="--", lw=0.8, color="0.6", zorder=0)
    xa, xb = max(x0, c - y1), min(x1, c - y0)  # the part inside the axes
    if xb > xa:
      xm = (xa + xb) / 2
      ax.text(
        xm,
        c - xm,
        f"-ELBO = {c:g}",
        rotation=angle,
        rotation_mode="anchor",
        ha="center",
        va="bottom",
        fontsize=7,
        color="0.45",
      )


def rate_distortion(path: str, rows: list[dict], title: str) -> None:
  """A sweep on the rate-distortion plane (Alemi et al., 2018, "Fixing a
  Broken ELBO"): distortion against rate, with lines of equal ELBO.

  -ELBO = rate + distortion, so equal-ELBO lines have slope -1. One point per
  member, annotated with its beta; members sharing (likelihood, sigma2) form a
  series (one colour and marker, joined in order of beta). Members that
  diverged, or whose rate or distortion is not finite, are left out and
  counted in the title; if none is left the figure says so.

  Args:
    path: the PNG to write.
    rows: one dict per sweep member with ``rate`` (KL(q(z|x)||p(z)), nats per
      example), ``distortion`` (-E log p(x|z), nats per example; negative for
      a Gaussian density is fine), ``beta``, ``sigma2`` (None unless the
      decoder is Gaussian with a fixed variance), ``likelihood`` (str) and
      ``diverged`` (bool).
    title: the figure's title.
  """
  shown = [
    r
    for r in rows
    if not r["diverged"]
    and math.isfinite(r["rate"])
    and math.isfinite(r["distortion"])
  ]
  if len(shown) < len(rows):
    title += (
      f"\n({len(rows) - len(shown)} of {len(rows)} members diverged, not shown)"
    )
  fig, ax = plt.subplots(figsize=(6.4, 4.8))
  ax.set_title(title, fontsize=10)
  if not shown:
    message = (
      f"all {len(rows)} sweep members diverged:\nnothing to plot"
      if rows
      else "no sweep members: nothing to plot"
    )
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    _save(fig, path)
    return
  rate = np.array([r["rate"] for r in shown], np.float64)
  distortion = np.array([r["distortion"] for r in shown], np.float64)
  ax.set_xlim(*_padded_limits(rate))
  ax.set_ylim(*_padded_limits(distortion))
  _draw_iso_elbo(ax, rate + distortion)
  series = sorted(
    {(r["likelihood"], r["sigma2"]) for r in shown},
    key=lambda k: (k[0], k[1] is not None, k[1] or 0.0),
  )
  for i, key in enumerate(series):
    members = sorted(
      (r for r in shown if (r["likelihood"], r["sigma2"]) == key),
      key=lambda r: r["beta"],
    )
    ax.plot(
      [r["rate"] for r in members],
      [r["distortion"] for r in members],
      marker=_MARKERS[i % len(_MARKERS)],
      color=f"C{i % 10}",
      ms=6,
      lw=0.8,
      label=_series_label(*key),
    )
    for r in members:
      ax.annotate(
        f"β={r['beta']:g}",
        (r["rate"], r["distortion"]),
        xytext=(4, 4),
        textcoords="offset points",
        fontsize=7,
      )
  ax.set_xlabel("rate KL(q(z|x)||p(z)) (nats per example)")
  ax.set_ylabel("distortion -E log p(x|z) (nats per example)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  _save(fig, path)


def _check_grid(name: str, grid) -> np.ndarray:
  """``grid`` as a float array after checking it is 1-D, > 0 and increasing."""
  grid = np.asarray(grid, np.float64)
  if grid.ndim != 1 or grid.size == 0:
    raise ValueError(
      f"{name} must be a non-empty 1-D array; got shape {grid.shape}"
    )
  if not np.all(np.isfinite(grid) & (grid > 0)):
    raise ValueError(f"{name} must be finite and > 0; got {grid}")
  if np.any(np.diff(grid) <= 0):
    raise ValueError(f"{name} must be sorted, strictly increasing; got {grid}")
  return grid


def _label_beta(on_line: list[float], lo: float, hi: float) -> float:
  """Where on a constant-product line to write its label: the geometric
  middle of its middle pair of grid points, away from the cells' numbers; with
  one grid point, halfway to the farther end [lo, hi] of the visible line."""
  if len(on_line) == 1:
    b = on_line[0]
    return math.sqrt(b * (lo if b / lo > hi / b else hi))
  k = (len(on_line) - 1) // 2
  return math.sqrt(on_line[k] * on_line[k + 1])


def _draw_constant_products(ax, betas: np.ndarray, sigma2s: np.ndarray) -> None:
  """Lines sigma2 = c / (2 beta) for each grid value c of 2 sigma2 beta, each
  labelled with its c, over the current (log) limits."""
  (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
  products = _constant_products(betas, sigma2s)
  grid_product = 2 * np.outer(sigma2s, betas)
  on_lines = [
    [
      float(b)
      for b, col in zip(betas, grid_product.T)
      if np.any(np.abs(col - c) <= 1e-9 * c)
    ]
    for c in products
  ]
  for i, c in enumerate(products):
    ends = [c / (2 * x0), c / (2 * x1)]
    # White dashes over a black line: alternating, visible on any colour.
    ax.plot([x0, x1], ends, lw=1.0, color="black", zorder=2)
    ax.plot([x0, x1], ends, lw=1.0, ls=(0, (4, 4)), color="white", zorder=2)
    b = _label_beta(on_lines[i], max(x0, c / (2 * y1)), min(x1, c / (2 * y0)))
    angle = _screen_angle(ax, (b, c / (2 * b)), (2 * b, c / (4 * b)))
    ax.text(
      b,
      c / (2 * b),
      f"2σ²β = {c:.3g}",
      rotation=angle,
      rotation_mode="anchor",
      ha="center",
      va="center",
      fontsize=6.5,
      zorder=4,
      bbox=dict(
        boxstyle="round,pad=0.2", fc="white", ec="black", lw=0.5, alpha=0.85
      ),
    )


def sweep_heatmap(
  path: str,
  betas: np.ndarray,
  sigma2s: np.ndarray,
  values: np.ndarray,
  label: str,
  title: str,
) -> None:
  """One number per (beta, sigma2) cell of a sweep, on log-log axes, with the
  lines of constant 2 sigma2 beta.

  With a fixed-variance Gaussian decoder, -ELBO_beta = SSE / (2 sigma2) + beta
  KL + const = [SSE + 2 sigma2 beta KL] / (2 sigma2) + const, so every
  (beta, sigma2) with the same 2 sigma2 beta has the same minimisers and the
  cells along one dashed line should agree in rate and in SSE (not in nats of
  distortion, whose scale is 1 / (2 sigma2)). Cells are bounded by geometric
  midpoints of the grid; each shows its value to three significant digits;
  non-finite cells (missing, diverged) stay grey.

  Args:
    path: the PNG to write.
    betas: ``[nb]`` KL weights, > 0, strictly increasing (the x axis).
    sigma2s: ``[ns]`` decoder variances, > 0, strictly increasing (the y axis).
    values: ``[ns, nb]``; ``values[i, j]`` belongs to ``sigma2s[i]`` and
      ``betas[j]``; NaN where missing.
    label: the colourbar's label, with units.
    title: the figure's title.

  Raises:
    ValueError: naming the argument, if a grid is not 1-D, positive and sorted,
      or ``values`` is not ``[len(sigma2s), len(betas)]``.
  """
  betas = _check_grid("betas", betas)
  sigma2s = _check_grid("sigma2s", sigma2s)
  values = np.asarray(values, np.float64)
  if values.shape != (len(sigma2s), len(betas)):
    raise ValueError(
      f"values must have shape [len(sigma2s), len(betas)] = "
      f"{[len(sigma2s), len(betas)]}; got {list(values.shape)}"
    )
  finite = values[np.isfinite(values)]
  norm = matplotlib.colors.Normalize(
    *((finite.min(), finite.max()) if finite.size else (0.0, 1.0))
  )
  cmap = plt.get_cmap("viridis")
  fig, ax = plt.subplots(
    figsize=(
      max(4.5, 0.8 * len(betas) + 2.5),
      max(3.5, 0.55 * len(sigma2s) + 2),
    )
  )
  x_edges, y_edges = _log_cell_edges(betas), _log_cell_edges(sigma2s)
  mesh = ax.pcolormesh(
    x_edges, y_edges, np.ma.masked_invalid(values), cmap=cmap, norm=norm
  )
  ax.set_facecolor("0.8")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlim(x_edges[0], x_edges[-1])
  ax.set_ylim(y_edges[0], y_edges[-1])
  ax.set_xticks(betas, [f"{b:g}" for b in betas])
  ax.set_yticks(sigma2s, [f"{s:g}" for s in sigma2s])
  ax.minorticks_off()
  fig.colorbar(mesh, ax=ax, label=label)  # before the lines: it moves the axes
  _draw_constant_products(ax, betas, sigma2s)
  for i, s in enumerate(sigma2s):
    for j, b in enumerate(betas):
      if np.isfinite(values[i, j]):
        rgba = cmap(norm(values[i, j]))
        light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5
        # A box of the cell's colour keeps the dashed lines off the number.
        ax.text(
          b,
          s,
          f"{values[i, j]:.3g}",
          ha="center",
          va="center",
          fontsize=7,
          color="black" if light else "white",
          zorder=3,
          bbox=dict(boxstyle="square,pad=0.1", fc=rgba, ec="none"),
        )
  ax.set_xlabel("β")
  ax.set_ylabel("σ²")
  if finite.size < values.size:
    title += "\n(grey: missing or diverged)"
  ax.set_title(title, fontsize=10)
  _save(fig, path)
