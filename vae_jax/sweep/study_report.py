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


def grey_share(images: np.ndarray) -> float:
  """The share of pixels strictly between 0.1 and 0.9: neither ink nor
  paper, so the larger it is, the blurrier a picture of digits looks."""
  return float(np.mean((images > 0.1) & (images < 0.9)))


def _cell_of(cells, arm):
  return next((c for c in cells if c.arm == arm), None)


def _on_the_grey_scale(cells) -> list[tuple[study.Cell, float]]:
  """(cell, mean bits/dim) of the rows on the 8-bit digits' scale: the
  densities on dequantized levels and the masses on the levels."""
  out = []
  for cell in cells:
    bits = study.statistics(cell)["bits/dim"].mean
    if bits is not None and cell.results[0].data_protocol in _GREY:
      out.append((cell, bits))
  return out


_GREY = ("continuous", "levels")
_DISCRETE = ("discretized_logistic", "discretized_logistic_mixture")


def _discretized(cells) -> list[str]:
  """PixelCNN++'s likelihood against the densities, on one scale."""
  single = _mean(cells, "discretized_logistic", "bits/dim")
  mixture = _mean(cells, "discretized_logistic_mixture", "bits/dim")
  scale = _on_the_grey_scale(cells)
  densities = [p for p in scale if p[0].arm not in _DISCRETE]
  if (single is None and mixture is None) or not densities:
    return []
  best, best_bits = min(scale, key=lambda p: p[1])
  density, density_bits = min(densities, key=lambda p: p[1])
  here = " and ".join(
    f"the {what} {bits:.3f}"
    for what, bits in (("discretized logistic", single), ("mixture", mixture))
    if bits is not None
  )
  text = (
    "**Discretized logistics on the 8-bit levels.** Salimans et al. "
    '(2017, "PixelCNN++: improving the PixelCNN with discretized logistic '
    'mixture likelihood and other modifications") model each 8-bit pixel '
    "with a mixture of logistics binned onto the 256 levels, the "
    "likelihood that NVAE (Vahdat and Kautz, 2020) and VDVAE (Child, 2021) "
    "decode natural images with: a mass on the levels, whose NLL is exact, "
    "where a density fitted to dequantized data only bounds the NLL of the "
    "discrete model it implies (Theis et al., 2016). Here, in bits/dim, "
    f"{here}; the best density on the dequantized levels, the "
    f"{density.label}, {density_bits:.3f}. The lowest bits/dim on these "
    f"8-bit digits, {best_bits:.3f}, is that of the {best.label}"
    + (
      ": a discretized logistic, the literature's choice for 8-bit images."
      if best.arm in _DISCRETE
      else ", not a discretized logistic's: on this measure this run does "
      "not bear out the literature's choice for 8-bit images."
    )
  )
  if single is not None and mixture is not None:
    text += (
      f" The mixture is {abs(mixture - single):.3f} bits/dim "
      + ("below" if mixture < single else "above")
      + " the single logistic"
      + (
        ": its extra components per pixel pay."
        if mixture < single
        else ": its extra components per pixel do not pay here."
      )
    )
  return [text, ""]


def _laplace(cells) -> list[str]:
  """The L1 loss's likelihood against the squared error's."""
  laplace = _mean(cells, "laplace_learned", "bits/dim")
  gaussian = _mean(cells, "gaussian_learned", "bits/dim")
  if laplace is None or gaussian is None:
    return []
  laplace_mse = _mean(cells, "laplace_learned", "pixel MSE")
  gaussian_mse = _mean(cells, "gaussian_learned", "pixel MSE")
  return [
    "**Laplace against Gaussian.** A Laplace decoder is the likelihood "
    "behind an L1 reconstruction loss, as the Gaussian is behind the "
    "squared error: at a fixed scale b its -log p(x|z) is the sum of "
    "absolute errors over b plus a constant. L1 is often chosen over L2 "
    "for images that are less blurred (e.g. Isola et al., 2017, for the "
    "L1 term of pix2pix). Here, each with one learned scale, the Laplace "
    f"reaches {laplace:.3f} bits/dim against the Gaussian's "
    f"{gaussian:.3f}: "
    + (
      f"{gaussian - laplace:.3f} better"
      if laplace < gaussian
      else f"{laplace - gaussian:.3f} worse"
    )
    + ", on the same dequantized scale. Its location is a median, not a "
    "mean: the pixel MSE of its reconstructions is "
    f"{laplace_mse:.4f} against the Gaussian's {gaussian_mse:.4f}.",
    "",
  ]


def _grids(cells) -> list[str]:
  """How grey (blurred) each row's pictures are, seed 0, as in the figure."""
  shown = [
    _cell_of(cells, arm)
    for arm in ("gaussian_learned", "laplace_learned", *_DISCRETE)
  ]
  shown = [c for c in shown if c is not None and not c.results[0].diverged]
  if not shown:
    return []
  share = {
    c.arm: (
      grey_share(c.decoded[0].reconstructions),
      grey_share(c.decoded[0].samples),
    )
    for c in shown
  }
  each = "; ".join(
    f"{c.label}: {100 * share[c.arm][0]:.1f}% and {100 * share[c.arm][1]:.1f}%"
    for c in shown
  )
  text = (
    "**What the grids show.** The share of grey pixels (E[x|z] strictly "
    "between 0.1 and 0.9, neither ink nor paper: the more, the blurrier) "
    "in the figure's eight reconstructions and eight samples: "
    f"{100 * grey_share(shown[0].decoded[0].inputs):.1f}% in the test "
    f"images; {each}."
  )
  if "laplace_learned" in share and "gaussian_learned" in share:
    sharper = share["laplace_learned"][0] < share["gaussian_learned"][0]
    text += " The Laplace's reconstructions are " + (
      "less grey than the Gaussian's: the sharper look L1 is chosen for."
      if sharper
      else "no less grey than the Gaussian's: not the sharper look L1 is "
      "chosen for."
    )
  blurriest = max(shown, key=lambda c: share[c.arm][1])
  text += f" The greyest samples are those of the {blurriest.label}."
  return [text, ""]


def literature(cells: list[study.Cell]) -> list[str]:
  """What Loaiza-Ganem and Cunningham (2019), Rybkin et al. (2021), Salimans
  et al. (2017) and the L1 loss's users report, and whether this run's
  numbers point the same way."""
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
  known = [(s, b) for s, b in fixed if b is not None]
  if optimal is not None and known:
    best_s, best = min(known, key=lambda p: p[1])
    beaten = sum(optimal < b for _, b in known)
    learned = _mean(cells, "gaussian_learned", "bits/dim")
    per_fixed = ", ".join(f"{b:.3f} at sigma^2 = {s:g}" for s, b in known)
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
        else f"The optimal sigma^2 beats {beaten} of the {len(known)} "
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
  return lines + _discretized(cells) + _laplace(cells) + _grids(cells)


def _other_seeds(config: ml_collections.ConfigDict) -> str:
  """The arms that run other seeds than ``config.seeds``, for the page."""
  other = [
    f"the {study.ARMS[name].label}: {study.arm_seeds(config, name)}"
    for name in config.arms
    if study.arm_seeds(config, name) != tuple(config.seeds)
  ]
  return f" ({'; '.join(other)})" if other else ""


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
  dims = int(np.prod(cells[0].decoded[0].inputs.shape[1:]))
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
    f"free bits {base.free_bits:g}, {base.mixture_components} components "
    f"in a mixture; seeds {tuple(config.seeds)}{_other_seeds(config)}. "
    "Figures are mean ± standard deviation over the seeds (a number alone: "
    "one seed), on the test set.",
    "",
    "- **bits/dim**: the importance-weighted NLL "
    f"(k = {base.nll_samples} samples, Burda et al. 2016) per dimension in "
    "bits. For the densities on grey levels (continuous Bernoulli, the "
    "Gaussians, the Laplace) the data are dequantized, x = (k + u) / 256, "
    "and log 256 per dimension is added, so their bits/dim is a bound on "
    "the 8-bit digits' discrete NLL (Theis et al. 2016). The discretized "
    "logistics see the levels themselves, x = k / 255, and are masses on "
    "them: their bits/dim is that discrete NLL itself, nothing added. One "
    "scale for all of them. "
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
    "squared error); for the Laplace, its trained scale b.",
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
    "",
    "## Where the time went",
    "",
    *time_table(config, cells),
  ]
  files.write_text(path, "\n".join(text).rstrip("\n") + "\n")


def time_table(config: ml_collections.ConfigDict, cells: list) -> list[str]:
  """Each arm's models, and the seconds its groups took to train and to
  evaluate, from the runs' own records (``Result.train_seconds``,
  ``eval_seconds``: the trained epochs of this or an earlier invocation)."""
  lines = [
    "Each arm's members train together in one compiled program; its "
    "seconds are its programs' (training: the epochs' wall time; "
    "evaluation: the final test ELBO, NLL and active units), as recorded in "
    "the runs. The rest of the invocation is compilation, decoding the "
    "grids and writing.",
    "",
    "| p(x\\|z) | models | training (s) | evaluation (s) |",
    "|---|---:|---:|---:|",
  ]
  totals = [0, 0.0, 0.0]
  for name in config.arms:
    rows = [r for c in cells if c.arm == name for r in c.results]
    # Every member records its group's time: 1 / group_members of it each.
    train = sum(r.train_seconds / r.group_members for r in rows)
    evaluate = sum(r.eval_seconds / r.group_members for r in rows)
    lines.append(
      f"| {study.ARMS[name].label} | {len(rows)} | {train:.0f} | "
      f"{evaluate:.0f} |"
    )
    for i, v in enumerate((len(rows), train, evaluate)):
      totals[i] += v
  lines.append(f"| all | {totals[0]} | {totals[1]:.0f} | {totals[2]:.0f} |")
  return lines


_SHOWN_AS = dict(dynamic="binarized", static="binarized", levels="levels")


def _figure(path: str, cells: list[study.Cell]) -> None:
  # Imported here: matplotlib takes a second to import.
  from vae_jax.train import plots

  rows: list[tuple[str, np.ndarray, np.ndarray | None]] = []
  shown = set()
  for cell in cells:
    first = cell.decoded[0]
    protocol = cell.results[0].data_protocol
    if protocol not in shown:
      shown.add(protocol)
      what = _SHOWN_AS.get(protocol, "grey")
      rows.append((f"test images ({what})", first.inputs, None))
    rows.append((cell.label, first.reconstructions, first.samples))
  plots.side_by_side(
    path,
    rows,
    ("reconstructions E[x|z], z = posterior mean", "E[x|z], z ~ N(0, I)"),
  )
