"""PNG figures of a run: reconstructions, prior samples, curves, traversals.

Each function takes arrays (images ``[N, H, W, C]`` in [0, 1]) and a path, and
writes one labelled figure atomically. Uses matplotlib's Agg backend: no
display needed.
"""

import math
import os
import tempfile

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def _grid(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """Tiles ``[rows*cols, H, W, C]`` into one ``[rows*(H+1), cols*(W+1)]``."""
  images = np.asarray(images, np.float32)[..., 0]
  n, h, w = images.shape
  canvas = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1), np.float32)
  for i in range(min(n, rows * cols)):
    r, c = divmod(i, cols)
    canvas[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = images[i]
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


def reconstructions(path: str, inputs: np.ndarray, outputs: np.ndarray,
                    title: str) -> None:
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


def latent_grid(path: str, images: np.ndarray, rows: int, cols: int,
                title: str, ylabel: str, xlabel: str) -> None:
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
  for ax, keys in ((left, ("train_loss", "train_elbo", "test_elbo")),
                   (right, ("train_rate", "train_distortion", "test_rate",
                            "test_distortion"))):
    for key in keys:
      sign = -1 if key.endswith("elbo") else 1
      points = [(r["epoch"], sign * r[key]) for r in records
                if r.get(key) is not None]
      if points:
        x, y = zip(*points)
        label = key.replace("_", " ").replace("elbo", "-ELBO")
        ax.plot(x, y, "o-" if key.startswith("test") else "-", ms=3,
                label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  left.set_title("loss and negative ELBO (lower is better)", fontsize=9)
  right.set_title("rate KL(q(z|x)||p(z)) and distortion -E log p(x|z)",
                  fontsize=9)
  _save(fig, path)
