"""``docs/study.md``: the study's table, figures and reading, from its numbers.

Every number in the page is computed here from the study's Results and the
decoded members (:mod:`vae_jax.sweep.study`); the sentences that compare the
run with the literature are chosen by those numbers, not written ahead.
"""

import os

import ml_collections
import numpy as np

from vae_jax.sweep import study
from vae_jax.train import files

HEADLINE_BEGIN = "<!-- study-headline:begin -->"
HEADLINE_END = "<!-- study-headline:end -->"
HEADLINE_COLUMNS = ("bits/dim", "rate (nats)", "distortion (nats)", "pixel MSE")
GRIDS = "study-grids.png"


def _cell(s: study.Stat, digits: int) -> str:
  if s.mean is None:
    return "n/a"
  if s.sd is None:
    return f"{s.mean:.{digits}f}"
  return f"{s.mean:.{digits}f} ± {s.sd:.{digits}f}"


_DIGITS = {
  "bits/dim": 3,
  "NLL (nats)": 1,
  "-ELBO (nats)": 1,
  "rate (nats)": 1,
  "distortion (nats)": 1,
  "pixel MSE": 4,
  "active units": 1,
  "sigma^2 at test": 4,
}


def table(cells: list[study.Cell], columns) -> list[str]:
  """A markdown table: one row per cell, mean ± sd over its seeds."""
  lines = [
    "| p(x\\|z) | " + " | ".join(columns) + " |",
    "|---|" + "---:|" * len(columns),
  ]
  for cell in cells:
    stats = study.statistics(cell)
    lines.append(
      f"| {cell.label} | "
      + " | ".join(_cell(stats[c], _DIGITS[c]) for c in columns)
      + " |"
    )
  return lines


def headline(cells: list[study.Cell]) -> str:
  """The README's table (between the markers), as the page has it."""
  return "\n".join(
    [HEADLINE_BEGIN, *table(cells, HEADLINE_COLUMNS), HEADLINE_END]
  )


def _mean(cells, arm, column, sigma2=None):
  for cell in cells:
    if cell.arm == arm and cell.sigma2 == sigma2:
      return study.statistics(cell)[column].mean
  return None


def literature(cells: list[study.Cell]) -> list[str]:
  """What Loaiza-Ganem and Cunningham (2019) and Rybkin et al. (2021)
  report, and whether this run's numbers point the same way."""
  lines = []
  cb_mse = _mean(cells, "continuous_bernoulli", "pixel MSE")
  grey_mse = _mean(cells, "bernoulli_grey", "pixel MSE")
  cb_bpd = _mean(cells, "continuous_bernoulli", "bits/dim")
  if cb_mse is not None and grey_mse is not None:
    same = cb_mse < grey_mse
    lines += [
      "**Continuous Bernoulli against a Bernoulli on grey levels.** "
      'Loaiza-Ganem and Cunningham (2019, "The continuous Bernoulli: '
      'fixing a pervasive error in variational autoencoders") show that a '
      "Bernoulli on [0, 1]-valued pixels is not a normalised density (its "
      "normalising constant is dropped) and report that the continuous "
      "Bernoulli, which keeps it, gives sharper images and better "
      "reconstructions. Here the continuous Bernoulli is a density with "
      + (f"{cb_bpd:.3f} bits/dim" if cb_bpd is not None else "a bits/dim")
      + ", while the Bernoulli on grey levels has none to report. The "
      "pixel MSE of posterior-mean reconstructions (E[x|z], the "
      "distribution's mean for each) is "
      f"{cb_mse:.4f} for the continuous Bernoulli against {grey_mse:.4f} "
      "for the Bernoulli: "
      + (
        "lower, the direction the paper reports."
        if same
        else "higher, so this run does not reproduce the paper's "
        "direction on this measure."
      ),
      "",
    ]
  optimal = _mean(cells, "gaussian_optimal", "bits/dim")
  fixed = [
    (c.sigma2, study.statistics(c)["bits/dim"].mean)
    for c in cells
    if c.arm == "gaussian_fixed"
  ]
  fixed = [(s, b) for s, b in fixed if b is not None]
  if optimal is not None and fixed:
    best_s, best = min(fixed, key=lambda p: p[1])
    beaten = sum(optimal < b for _, b in fixed)
    learned = _mean(cells, "gaussian_learned", "bits/dim")
    per_fixed = ", ".join(f"{b:.3f} at sigma^2 = {s:g}" for s, b in fixed)
    lines += [
      '**Optimal against fixed sigma^2.** Rybkin et al. (2021, "Simple '
      'and effective VAE training with calibrated decoders") report that '
      "the sigma-VAE's optimal sigma^2 reaches a better likelihood than a "
      "Gaussian with a fixed sigma^2, without tuning it, and that a "
      "learned shared sigma^2 does about as well. Here the optimal "
      f"sigma^2 reaches {optimal:.3f} bits/dim; the fixed values "
      f"{per_fixed}. "
      + (
        f"The optimal sigma^2 is better than every fixed value, the "
        f"best of which (sigma^2 = {best_s:g}) is {best - optimal:.3f} "
        "bits/dim behind: the paper's direction."
        if optimal < best
        else f"The optimal sigma^2 beats {beaten} of the {len(fixed)} "
        f"fixed values but not the best one (sigma^2 = {best_s:g}, "
        f"{optimal - best:.3f} bits/dim ahead of it): a hand-tuned "
        "sigma^2 can match it, as the paper also finds when the fixed "
        "value is near the data's error."
      )
      + (
        f" The learned shared sigma^2 reaches {learned:.3f} bits/dim, "
        f"{abs(learned - optimal):.3f} "
        + ("better than" if learned < optimal else "behind")
        + " the optimal one."
        if learned is not None
        else ""
      ),
      "",
    ]
  return lines


def write(
  path: str,
  config: ml_collections.ConfigDict,
  cells: list[study.Cell],
  *,
  command: str,
  seconds: float,
  provenance: dict,
) -> None:
  """Writes the page at ``path`` and its figure beside it
  (``figures/study-grids.png`` under the page's folder)."""
  directory = os.path.dirname(os.path.abspath(path))
  grids = os.path.join(directory, "figures", GRIDS)
  _figure(grids, cells)
  base = config.base
  members = sum(len(c.results) for c in cells)
  first = cells[0].results[0]
  dims = int(np.prod(cells[0].members[0].inputs.shape[1:]))
  minutes, rest = divmod(round(seconds), 60)
  text = [
    "# The reconstruction-term study",
    "",
    "What the choice of decoder p(x|z) does to one VAE on the same real "
    "digits. Written by the command below; every number on this page comes "
    "from its run, and rerunning it rewrites the page.",
    "",
    "```",
    command,
    "```",
    "",
    f"Run: {provenance['date']}, {provenance['cpu']} "
    f"({provenance['cpu_count']} cores), {provenance['platform']}, jax "
    f"{provenance['jax']}, flax {provenance['flax']}, optax "
    f"{provenance['optax']}, commit {provenance['git_commit']}; "
    f"{members} models in {len(config.arms)} compiled programs (one per "
    f"decoder); this invocation of the command took {minutes} min "
    f"{rest:02d} s (decoders read back from an earlier one take none).",
    "",
    f"Every model: {base.source} ({first.num_train:,} training and "
    f"{first.num_test:,} test images), MLP "
    f"{'-'.join(str(h) for h in (dims, *base.hidden_sizes, base.latent_dim))}"
    f" with {base.activation}, Adam {base.learning_rate:g}, batch "
    f"{base.batch_size}, {base.num_epochs} epochs, beta = {base.beta:g}, "
    f"free bits {base.free_bits:g}; seeds {tuple(config.seeds)}. Figures "
    "are mean ± "
    "standard deviation over the seeds, on the test set.",
    "",
    "- **bits/dim**: the importance-weighted NLL "
    f"(k = {base.nll_samples} samples, Burda et al. 2016) per dimension in "
    "bits. For the densities on grey levels (continuous Bernoulli, the "
    "Gaussians) the data are dequantized, x = (k + u) / 256, and log 256 "
    "per dimension is added, so their bits/dim is a bound on the 8-bit "
    "digits' discrete NLL (Theis et al. 2016): one scale for all of them. "
    "The binarized digits are other data: their bits/dim is on its own "
    "scale. The Bernoulli on grey levels is not a likelihood of its data: "
    "n/a.",
    "- **NLL**, **-ELBO**, **rate** (KL(q(z|x) || p(z))), **distortion** "
    "(-E_q log p(x|z)): nats per image, in each decoder's own units (the "
    "Bernoulli on grey levels' distortion is a cross-entropy).",
    "- **pixel MSE**: mean squared error per pixel between a test image "
    "and E[x|z] at its posterior mean, the one measure every decoder "
    "shares (the binarized digits are compared with their binarization).",
    "- **active units**: latent dimensions whose posterior mean varies "
    "over the test set (Cov > 0.01, Burda et al. 2016).",
    "- **sigma^2 at test**: the Gaussian variance the test numbers use "
    "(learned: the trained value; optimal: the training set's mean "
    "squared error).",
    "",
    "## Results",
    "",
    *table(cells, [c for c, _ in study.COLUMNS]),
    "",
    "The headline, as the README shows it:",
    "",
    headline(cells),
    "",
    f"![reconstructions and samples](figures/{GRIDS})",
    "",
    "Seed 0 of each row: reconstructions E[x|z] of the first test images "
    "(left) and E[x|z] for the same eight z ~ N(0, I) in every row "
    "(right).",
    "",
    "## What each row is",
    "",
    *[
      f"- **{study.ARMS[name].label}**: {study.ARMS[name].meaning}"
      for name in config.arms
    ],
    "",
    "## The literature, and this run",
    "",
    *literature(cells),
  ]
  files.write_text(path, "\n".join(text).rstrip("\n") + "\n")


def _figure(path: str, cells: list[study.Cell]) -> None:
  from vae_jax.train import plots  # pylint: disable=g-import-not-at-top

  rows, shown = [], set()
  for cell in cells:
    first = cell.members[0]
    protocol = cell.results[0].data_protocol
    if protocol not in shown:
      shown.add(protocol)
      what = "binarized" if protocol in ("dynamic", "static") else "grey"
      rows.append((f"test images ({what})", first.inputs, None))
    rows.append((cell.label, first.reconstructions, first.samples))
  plots.side_by_side(
    path,
    rows,
    ("reconstructions E[x|z], z = posterior mean", "E[x|z], z ~ N(0, I)"),
  )
