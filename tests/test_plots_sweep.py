"""Sweep figures: the geometry helpers against hand values, the PNGs written."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from vae_jax.train import plots

SQRT10 = math.sqrt(10)


def _row(
  rate, distortion, beta, sigma2=0.1, likelihood="gaussian", diverged=False
):
  return dict(
    rate=rate,
    distortion=distortion,
    beta=beta,
    sigma2=sigma2,
    likelihood=likelihood,
    diverged=diverged,
  )


# Gaussian densities give negative distortions; one member diverged.
SWEEP = [
  _row(40.0, -150.0, 0.5),
  _row(20.0, -120.0, 1.0),
  _row(8.0, -60.0, 2.0),
  _row(30.0, -140.0, 1.0, sigma2=0.5),
  _row(25.0, 70.0, 1.0, sigma2=None, likelihood="bernoulli"),
  _row(math.nan, math.nan, 4.0, diverged=True),
]
BETAS = np.array([0.5, 1.0, 2.0])
SIGMA2S = np.array([0.25, 0.5, 1.0])


@pytest.fixture
def drawn(monkeypatch):
  """What each figure held when saved: its axes' limits, title and texts."""
  seen = []
  save = plots._save

  def recording_save(fig, path):
    ax = fig.axes[0]
    seen.append(
      dict(
        xlim=ax.get_xlim(),
        ylim=ax.get_ylim(),
        title=ax.get_title(),
        lines=len(ax.get_lines()),
        texts=[t.get_text() for t in ax.texts],
      )
    )
    save(fig, path)

  monkeypatch.setattr(plots, "_save", recording_save)
  return seen


def _assert_png(path):
  with Image.open(path) as image:
    assert image.format == "PNG"
    assert image.size[0] > 0 and image.size[1] > 0
  assert os.stat(path).st_mode & 0o777 == 0o644


class TestHelpers:
  def test_log_cell_edges_are_geometric_midpoints(self):
    np.testing.assert_allclose(
      plots._log_cell_edges([0.1, 1.0, 10.0]),
      [0.1 / SQRT10, math.sqrt(0.1), SQRT10, 10 * SQRT10],
      rtol=1e-12,
    )
    # Uneven ratios: each end repeats its neighbour's ratio.
    np.testing.assert_allclose(
      plots._log_cell_edges([1.0, 2.0, 8.0]),
      [1 / math.sqrt(2), math.sqrt(2), 4.0, 16.0],
      rtol=1e-12,
    )

  def test_log_cell_edges_of_one_value_are_a_factor_two_either_side(self):
    np.testing.assert_allclose(plots._log_cell_edges([3.0]), [1.5, 6.0])

  def test_constant_products_are_deduplicated(self):
    # 2 * {0.125, 0.25, 0.5, 0.25, 0.5, 1, 0.5, 1, 2}.
    np.testing.assert_allclose(
      plots._constant_products(BETAS, SIGMA2S),
      [0.25, 0.5, 1.0, 2.0, 4.0],
      rtol=1e-12,
    )

  def test_constant_products_merge_rounding_not_distinct_values(self):
    # 0.1 * 3 = 0.30000000000000004 and 0.3 * 1 = 0.3 are one line.
    np.testing.assert_allclose(
      plots._constant_products([0.1, 0.3], [1.0, 3.0]), [0.2, 0.6, 1.8]
    )
    assert len(plots._constant_products([1.0, 1.0 + 1e-6], [1.0])) == 2

  @pytest.mark.parametrize(
    "totals, expected",
    [
      ([95.3, 97.1], [95.5, 96.0, 96.5, 97.0]),
      ([0.0, 100.0], [0.0, 25.0, 50.0, 75.0, 100.0]),
      ([-12.0, 3.0], [-10.0, -7.5, -5.0, -2.5, 0.0, 2.5]),
      ([50.0], [48.0, 49.0, 50.0, 51.0, 52.0]),  # widened to 50 +- 2.5
    ],
  )
  def test_iso_elbo_levels_are_round_values_in_range(self, totals, expected):
    np.testing.assert_array_equal(plots._iso_elbo_levels(totals), expected)

  def test_iso_elbo_levels_count_stays_near_five(self):
    rng = np.random.default_rng(0)
    for _ in range(500):
      lo = rng.normal() * 10 ** rng.uniform(-3, 4)
      hi = lo + 10 ** rng.uniform(-4, 5)
      levels = plots._iso_elbo_levels([lo, hi])
      assert 3 <= len(levels) <= 7
      assert lo <= levels[0] and levels[-1] <= hi
      assert np.all(np.diff(levels) > 0)

  @pytest.mark.parametrize(
    "values", [[-200.0, -190.0], [5.0], [0.0], [-3.0, 40.0, 7.0]]
  )
  def test_padded_limits_cover_values_with_margin(self, values):
    lo, hi = plots._padded_limits(np.array(values))
    assert lo < min(values) and max(values) < hi
    margin = 0.05 * (hi - lo)  # at least 5% of the axis each side
    assert lo + margin < min(values) and max(values) < hi - margin


class TestRateDistortion:
  def test_writes_png_and_leaves_out_diverged(self, tmp_path, drawn):
    path = tmp_path / "rd.png"
    plots.rate_distortion(str(path), SWEEP, "sweep")
    _assert_png(path)
    assert os.listdir(tmp_path) == ["rd.png"]  # no temporary file left
    (fig,) = drawn
    assert "1 of 6 members diverged" in fig["title"]
    shown = [r for r in SWEEP if not r["diverged"]]
    (x0, x1), (y0, y1) = fig["xlim"], fig["ylim"]
    for r in shown:
      assert x0 < r["rate"] < x1 and y0 < r["distortion"] < y1
    assert sorted(t for t in fig["texts"] if t.startswith("β=")) == sorted(
      f"β={r['beta']:g}" for r in shown
    )
    assert sum(t.startswith("-ELBO = ") for t in fig["texts"]) >= 3

  def test_one_member(self, tmp_path, drawn):
    path = tmp_path / "one.png"
    plots.rate_distortion(str(path), [_row(12.0, -3.5, 1.0)], "one")
    _assert_png(path)
    (fig,) = drawn
    (x0, x1), (y0, y1) = fig["xlim"], fig["ylim"]
    assert x0 < 12.0 < x1 and y0 < -3.5 < y1
    assert "diverged" not in fig["title"]
    assert any(t.startswith("-ELBO = ") for t in fig["texts"])

  @pytest.mark.parametrize(
    "rows, message",
    [
      ([dict(r, diverged=True) for r in SWEEP], "all 6 sweep members diverged"),
      ([], "no sweep members"),
    ],
  )
  def test_nothing_to_plot_still_writes_a_figure(
    self, tmp_path, drawn, rows, message
  ):
    path = tmp_path / "none.png"
    plots.rate_distortion(str(path), rows, "none")
    _assert_png(path)
    assert os.listdir(tmp_path) == ["none.png"]
    assert message in drawn[0]["texts"][0]


class TestSweepHeatmap:
  def test_writes_png_with_nan_cells(self, tmp_path, drawn):
    values = np.outer(SIGMA2S, BETAS)
    values[1, 2] = np.nan
    path = tmp_path / "heat.png"
    plots.sweep_heatmap(
      str(path), BETAS, SIGMA2S, values, "rate (nats)", "heat"
    )
    _assert_png(path)
    assert os.listdir(tmp_path) == ["heat.png"]
    (fig,) = drawn
    np.testing.assert_allclose(
      fig["xlim"], [0.5 / math.sqrt(2), 2 * math.sqrt(2)]
    )
    np.testing.assert_allclose(fig["ylim"], [0.25 / math.sqrt(2), math.sqrt(2)])
    cells = [t for t in fig["texts"] if not t.startswith("2σ²β")]
    assert sorted(cells) == sorted(
      f"{v:.3g}" for v in values.ravel() if np.isfinite(v)
    )
    # Every line labelled with its product.
    labels = [t for t in fig["texts"] if t.startswith("2σ²β = ")]
    products = sorted({2 * b * s for b in BETAS for s in SIGMA2S})
    assert labels == [f"2σ²β = {c:.3g}" for c in products]
    assert fig["lines"] == 2 * 5  # black and white strokes of 5 products

  @pytest.mark.parametrize(
    "betas, sigma2s, values",
    [
      ([1.0], [0.5], [[3.0]]),
      ([1.0, 2.0], [0.5], [[np.nan, np.nan]]),
      ([0.1, 1.0, 10.0], [0.5], [[1.0, np.inf, -2.0]]),
    ],
  )
  def test_single_cells_and_missing_values(
    self, tmp_path, betas, sigma2s, values
  ):
    path = tmp_path / "heat.png"
    plots.sweep_heatmap(str(path), betas, sigma2s, values, "x", "t")
    _assert_png(path)
    assert os.listdir(tmp_path) == ["heat.png"]

  @pytest.mark.parametrize(
    "betas, sigma2s, values, name",
    [
      ([[0.5, 1.0]], SIGMA2S, np.ones((3, 2)), "betas"),
      ([], SIGMA2S, np.ones((3, 0)), "betas"),
      ([1.0, 0.5, 2.0], SIGMA2S, np.ones((3, 3)), "betas"),
      ([0.0, 1.0, 2.0], SIGMA2S, np.ones((3, 3)), "betas"),
      (BETAS, [0.25, 0.25, 1.0], np.ones((3, 3)), "sigma2s"),
      (BETAS, [-1.0, 0.5, 1.0], np.ones((3, 3)), "sigma2s"),
      (BETAS, [0.25, np.nan, 1.0], np.ones((3, 3)), "sigma2s"),
      (BETAS, SIGMA2S[:2], np.ones((3, 2)), "values"),
      (BETAS, SIGMA2S, np.ones(9), "values"),
    ],
  )
  def test_bad_arguments_are_named(
    self, tmp_path, betas, sigma2s, values, name
  ):
    with pytest.raises(ValueError, match=f"^{name} must"):
      plots.sweep_heatmap(
        str(tmp_path / "bad.png"), betas, sigma2s, values, "x", "t"
      )
    assert not os.listdir(tmp_path)
