"""``docs/burda2016.md``: Table 1 of Burda et al. (2016) beside this run's rows.

The page is written from the rows' :class:`~vae_jax.train.results.Result`
records (``python -m experiments.burda``): the paper's test NLL beside this
run's k = 5,000 importance-weighted NLL and active units, the budget each row
was trained with (stages of the 3^i-epoch schedule, epochs, steps, time), the
machine and the date, and every place where vae_jax still differs from the
paper's code (yburda/iwae).
"""

import json
import os

from vae_jax.train import files
from vae_jax.train import results as results_lib
from vae_jax.train import training

# Burda, Grosse & Salakhutdinov (2016), "Importance weighted autoencoders",
# Table 1, MNIST, one stochastic layer: test NLL in nats by (objective, k).
PAPER_NLL = {
  ("elbo", 1): 86.76,
  ("elbo", 5): 86.47,
  ("elbo", 50): 86.35,
  ("iwae", 5): 85.54,
  ("iwae", 50): 84.78,
}
# The same table's active units; None where this report's author could not
# find the figure in the paper's text (left blank, not guessed).
PAPER_ACTIVE_UNITS: dict[tuple[str, int], int | None] = {
  row: None for row in PAPER_NLL
}
FULL_EPOCHS = sum(training.burda_stage_epochs())

# What experiments/configs/burda2016.py follows from the paper's code.
FOLLOWED = (
  "Data: MNIST's 60,000 training images in their order, the first 59,600 "
  "for training and the last 400 held out (not shuffled); every minibatch "
  "binarized anew, x ~ Bernoulli(level / 255); the test set binarized once "
  "with a fixed seed.",
  "Model: 784-200-200-50 with tanh units each way, Glorot-uniform weights "
  "and zero biases, the decoder's output bias at the logit of the mean "
  "training image clipped to [0.001, 0.999], the encoder's sigma = "
  "exp(linear).",
  "Optimiser: batch 20; their Adam: beta1 = 0.99, beta2 = 0.999, eps = 1e-4 "
  "added to sqrt(v) outside the bias correction, the second moment starting "
  "at one, each update made from the moments before that step's gradient, "
  "the gradient of the batch sum (vae_jax's mean loss times the batch size).",
  "Schedule: 3^i epochs at 1e-4 x round(10^(1 - i/7), 1) for i = 0..7 (1e-3, "
  "7.2e-4, ..., 1e-4; 3,280 epochs), one Adam state throughout.",
  "Objectives: VAE, k trains the mean of k one-sample ELBO terms (its KL "
  "term: see below); IWAE, k the log-mean-exp of k importance weights; both "
  "with the reparameterised gradient.",
  "Evaluation: -log p(x) by importance sampling with k = 5,000 on the "
  "10,000 test images; active units Var_x(E_q[u_j]) > 0.01.",
)

# Where vae_jax still differs from the paper's code.
DIFFERENCES = (
  "Minibatch order: their code visits the 59,600 images in the same order "
  "every epoch; vae_jax draws a new permutation every epoch.",
  "Initial weights: their code seeds each layer's generator with 123, so "
  "layers of one shape start equal (the two 200x200 layers of each network, "
  "the encoder's mean and sigma layers); vae_jax draws every layer "
  "independently from the run's seed (the same Glorot-uniform "
  "distribution; the encoder's mean and sigma layers are one 200 x 100 "
  "layer split in two, its scale that of two 200 x 50 layers).",
  "VAE, k: their loss is the mean of log w_k, the KL estimated by Monte "
  "Carlo; vae_jax's uses the KL in closed form (the same expectation, "
  "less variance).",
  "The Bernoulli log-likelihood: theirs is log(sigmoid(a)), computed after "
  "the sigmoid (-inf at saturated pixels); vae_jax's works on the logits "
  "(log-sigmoid, finite).",
  "Active units: their code takes the variance of the posterior means over "
  "the first 500 training images (one binarization); vae_jax over the "
  "10,000 test images (the evaluation's binarization).",
  "Random numbers: Theano's MRG generator there, JAX's threefry here: the "
  "same distributions, other draws (their README says the paper's first "
  "version used yet another random-number handling than the published "
  "code).",
  "Evaluation batching: 20 test images at a time there, 5,000 samples each; "
  "vae_jax scores 100 at a time in chunks of 500 samples, with a streaming "
  "log-sum-exp (the same estimator).",
  "Their code also reports the NLL after removing inactive units, and the "
  "training-set NLL; vae_jax reports neither.",
)


def read_back(workdir: str, row: str) -> results_lib.Result | None:
  """The Result of the run in ``<workdir>/<row>`` if it finished (its
  ``summary.json``, written last and atomically), else None."""
  path = os.path.join(workdir, row, "summary.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return results_lib.Result(**json.load(f))


def label(result: results_lib.Result) -> str:
  """``"VAE, k = 5"`` or ``"IWAE, k = 50"``: a row as Table 1 names it."""
  name = "IWAE" if result.objective == "iwae" else "VAE"
  return f"{name}, k = {result.train_samples}"


def stages(epochs: int) -> int:
  """How many whole stages of the 3^i-epoch schedule ``epochs`` spans."""
  done, total = 0, 0
  for n in training.burda_stage_epochs():
    if total + n > epochs:
      break
    done, total = done + 1, total + n
  return done


def _epochs(n: int) -> str:
  return f"{n:,} epoch" + ("" if n == 1 else "s")


def _number(value, spec: str) -> str:
  return "" if value is None else format(value, spec)


def table(rows: list[results_lib.Result]) -> list[str]:
  """The markdown table: the paper's five rows in its order, each with this
  run's figures where it trained that row (blank where not), then any other
  row it trained; the paper's figures first."""
  lines = [
    "| row | paper NLL | NLL | paper active units | active units | "
    "stages | epochs | steps | s / epoch |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  by_key = {(r.objective, r.train_samples): r for r in rows}
  others = [r for r in rows if (r.objective, r.train_samples) not in PAPER_NLL]
  for key in [*PAPER_NLL, *((r.objective, r.train_samples) for r in others)]:
    paper = (
      f"{_number(PAPER_NLL.get(key), '.2f')}",
      f"{_number(PAPER_ACTIVE_UNITS.get(key), 'd')}",
    )
    r = by_key.get(key)
    if r is None:
      name = "IWAE" if key[0] == "iwae" else "VAE"
      lines.append(
        f"| {name}, k = {key[1]} | {paper[0]} | | {paper[1]} | | "
        "not trained | | | |"
      )
      continue
    per_epoch = r.train_seconds / max(r.timed_epochs, 1)
    lines.append(
      f"| {label(r)} | {paper[0]} | {_number(r.test_nll, '.2f')} | "
      f"{paper[1]} | {_number(r.active_units, 'd')} | {stages(r.epochs)} | "
      f"{r.epochs:,} | {r.steps:,} | {per_epoch:.1f} |"
    )
  return lines


def markdown(
  rows: list[results_lib.Result], *, command: str, provenance: dict
) -> str:
  """The page's text."""
  p = provenance
  first = rows[0]
  budget = sorted({r.epochs for r in rows})
  full = all(r.epochs >= FULL_EPOCHS for r in rows)
  text = [
    "# Burda et al. (2016), Table 1, beside vae_jax",
    "",
    "The one-stochastic-layer MNIST rows of Table 1 of Burda, Grosse & "
    'Salakhutdinov (2016), "Importance weighted autoencoders", trained and '
    "evaluated by vae_jax. Written by the command below; every number that "
    "is not the paper's comes from its run.",
    "",
    "```",
    command,
    "```",
    "",
    f"Run: {p['date']}; {p['device']} ({p['platform']}, "
    f"{p['device_count']} device(s)), host {p['cpu']} ({p['cpu_count']} "
    f"cores); jax {p['jax']}, flax {p['flax']}, optax {p['optax']}; commit "
    f"{p['git_commit']}.",
    "",
    f"Data: {first.source}, {first.num_train:,} training and "
    f"{first.num_test:,} test images, protocol {first.data_protocol}. NLL: "
    f"-log p(x) estimated by importance sampling with k = "
    f"{first.nll_samples:,}, nats per test image (lower is better); active "
    "units: latent dimensions whose posterior mean varies over the test set "
    "(Var > 0.01).",
    "",
    (
      "Budget: every row trained the paper's whole schedule "
      f"({FULL_EPOCHS:,} epochs)."
      if full
      else "Budget: truncated. The paper trains 8 stages "
      f"({FULL_EPOCHS:,} epochs); the rows here trained "
      f"{' or '.join(_epochs(e) for e in budget)} (the stages column), "
      "so their NLL is not yet the paper's comparison."
    ),
    "",
    *table(rows),
    "",
    "Each row's own run (rows of an earlier invocation keep theirs): "
    + "; ".join(
      f"{label(r)} {r.provenance.get('date', '?')}, commit "
      f"{str(r.provenance.get('git_commit', '?'))[:12]}"
      for r in rows
    )
    + ".",
    "",
    "A row marked not trained has no run in this command's workdir (rows "
    "of an earlier invocation there are read back, at the budget they "
    "trained): the k = 50 rows cost about ten times a k = 5 row's epoch, "
    "the whole table's schedule is an accelerator's job "
    "(`benchmarks/accelerator.py` times each row's epoch).",
    "",
    "The paper's active units are left blank: their figures were not in "
    "the copy of the paper's text available when this page's writer was "
    "made, and are not guessed.",
    "",
    "## Followed from the paper's code (experiments/configs/burda2016.py)",
    "",
    *[f"- {line}" for line in FOLLOWED],
    "",
    "## Where vae_jax differs from the paper's code",
    "",
    *[f"- {line}" for line in DIFFERENCES],
  ]
  return "\n".join(text) + "\n"


def write(
  path: str,
  rows: list[results_lib.Result],
  *,
  command: str,
  provenance: dict,
) -> None:
  """Writes the page (:func:`markdown`) at ``path``, atomically."""
  files.write_text(path, markdown(rows, command=command, provenance=provenance))
