r"""PyTorch at Burda et al. (2016)'s sizes: the job of ``bare_burda.py``, for timing.

  python -m benchmarks.torch_burda --form eager|fused|compile \
      --objective elbo|iwae --samples K --data IMAGES.npy [--epochs 5]

``--data``: a ``.npy`` of uint8 levels ``[N, 784]``, the training images
(``benchmarks/burda_speed.py`` writes the first N of full MNIST's). Like
``torch_vae.py``, it imports neither jax nor vae_jax. The model of
``experiments/configs/burda2016.py``: tanh MLPs 784-200-200-(50 + 50) (mean
and log sigma) and 50-200-200-784 (Bernoulli logits), batch 20, dynamic
binarization of each batch, k samples per example, the k-sample ELBO
(closed-form KL) or the IWAE bound (``bare_burda.py``'s losses), and Adam
(rate 1e-3, betas (0.99, 0.999), eps 1e-4) in the forms of
``torch_vae.make_step`` (eager, fused Adam, ``torch.compile`` of the loss).
PyTorch's own initialisation (what is timed does not depend on it).

Same JSON-lines protocol as ``torch_vae.py`` (``ready``, ``epoch``,
``done``).
"""

import argparse
import math
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from benchmarks import torch_vae

PIXELS, HIDDEN, LATENTS = 784, 200, 50
ADAM = dict(betas=(0.99, 0.999), eps=1e-4)


def _mlp(sizes) -> nn.Sequential:
  layers: list[nn.Module] = []
  for a, b in zip(sizes[:-1], sizes[1:]):
    layers += [nn.Linear(a, b), nn.Tanh()]
  return nn.Sequential(*layers[:-1])


class BurdaVAE(nn.Module):
  """Burda et al.'s one-stochastic-layer VAE; ``forward(x)`` is the loss."""

  def __init__(self, objective: str, samples: int):
    super().__init__()
    self.objective, self.samples = objective, samples
    self.encoder = _mlp((PIXELS, HIDDEN, HIDDEN, 2 * LATENTS))
    self.decoder = _mlp((LATENTS, HIDDEN, HIDDEN, PIXELS))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """The batch loss of binary ``x [B, 784]`` with fresh noise, nats."""
    return self.loss(x, torch.randn(x.shape[0], self.samples, LATENTS))

  def loss(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The batch loss with noise ``eps [B, k, 50]``, nats per example."""
    mean, log_std = self.encoder(x).split(LATENTS, dim=-1)
    z = mean[:, None] + torch.exp(log_std)[:, None] * eps
    logits = self.decoder(z)
    log_lik = -F.binary_cross_entropy_with_logits(
      logits, x[:, None].expand_as(logits), reduction="none"
    ).sum(-1)  # [B, k]
    if self.objective == "iwae":
      # log p(z) - log q(z | x), with (z - mean)^2 / var = eps^2.
      log_w = log_lik + (0.5 * (eps**2 - z**2) + log_std[:, None]).sum(-1)
      bound = torch.logsumexp(log_w, dim=1) - math.log(eps.shape[1])
      return -bound.mean()
    kl = 0.5 * (torch.exp(2 * log_std) + mean**2 - 1 - 2 * log_std).sum(-1)
    return (kl - log_lik.mean(dim=1)).mean()


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--form", choices=("eager", "fused", "compile"), default="eager"
  )
  parser.add_argument("--objective", choices=("elbo", "iwae"), default="elbo")
  parser.add_argument("--samples", type=int, default=1)
  parser.add_argument("--data", required=True, help="uint8 [N, 784] .npy")
  parser.add_argument("--batch_size", type=int, default=20)
  parser.add_argument("--epochs", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  train = torch.from_numpy(np.load(args.data))
  torch_vae.emit(event="ready", time=time.time())
  torch.manual_seed(args.seed)  # initialisation, binarization, eps
  generator = torch.Generator().manual_seed(args.seed)  # permutations
  model = BurdaVAE(args.objective, args.samples)
  step = torch_vae.make_step(args.form, model, **ADAM)
  torch_vae.train_epochs(step, train, args.batch_size, args.epochs, generator)
  torch_vae.emit(event="done", time=time.time())


if __name__ == "__main__":
  sys.exit(main())
