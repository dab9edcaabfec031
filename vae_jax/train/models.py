"""The VAE: a Flax NNX encoder q(z|x) and a decoder whose output fits its likelihood.

Shapes: images ``[B, H, W, C]`` with values in [0, 1]; latents ``[B, L]``.
The encoder returns the mean and log-variance of a diagonal Gaussian
q(z|x); the decoder returns logits ``[B, H, W, C]``. What the logits mean is
set by the likelihood (see :func:`log_likelihood`):

- ``bernoulli`` and ``continuous_bernoulli``: the logits are the parameter;
- ``gaussian``: the mean is ``sigmoid(logits)`` and sigma^2 comes from
  ``sigma2_mode``: ``fixed`` (a number given by the caller), ``learned`` (one
  shared scalar), ``per_pixel`` (one per data dimension), or ``optimal`` (the
  sigma-VAE of Rybkin et al. 2021: the closed-form maximiser, the batch MSE,
  treated as a constant). Learned variances are ``min_sigma2 + softplus(raw)``
  so they never fall below the floor.

The training code works with the functional form, ``graphdef, params =
nnx.split(model)`` and ``nnx.merge(graphdef, params)`` inside jit, so the
parameters are a plain pytree that optax, orbax and ``jax.vmap`` all handle.
"""

from collections.abc import Sequence
import math

from flax import nnx
import jax
import jax.numpy as jnp

from vae_jax import decoders
from vae_jax import divergences
from vae_jax import likelihoods

ARCHITECTURES = ("mlp", "conv")
ACTIVATIONS = {
  "relu": jax.nn.relu,
  "tanh": jnp.tanh,
  "elu": jax.nn.elu,
  "gelu": jax.nn.gelu,
}
Array = jax.Array


class Sigma2(nnx.Param):
  """The decoder variance's raw parameter (kept apart so it can be found)."""


class MLP(nnx.Module):
  """Dense layers with an activation between them, none after the last."""

  def __init__(self, sizes: Sequence[int], activation: str, *, rngs: nnx.Rngs):
    self.layers = nnx.List(
      [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
    )
    self.activation = ACTIVATIONS[activation]

  def __call__(self, h: Array) -> Array:
    for layer in self.layers[:-1]:
      h = self.activation(layer(h))
    return self.layers[-1](h)


class ConvEncoder(nnx.Module):
  """Two stride-2 3x3 convolutions, then a dense layer to 2L outputs."""

  def __init__(self, image_shape, channels, latent_dim, activation, *, rngs):
    h, w, c = image_shape
    c1, c2 = channels
    self.conv1 = nnx.Conv(c, c1, (3, 3), strides=2, rngs=rngs)
    self.conv2 = nnx.Conv(c1, c2, (3, 3), strides=2, rngs=rngs)
    self.out = nnx.Linear((h // 4) * (w // 4) * c2, 2 * latent_dim, rngs=rngs)
    self.activation = ACTIVATIONS[activation]

  def __call__(self, x: Array) -> Array:
    h = self.activation(self.conv1(x))
    h = self.activation(self.conv2(h))
    return self.out(h.reshape(h.shape[0], -1))


class ConvDecoder(nnx.Module):
  """A dense layer to a (H/4, W/4) map, then two stride-2 transposed convs."""

  def __init__(self, image_shape, channels, latent_dim, activation, *, rngs):
    h, w, c = image_shape
    c1, c2 = channels
    self.grid = (h // 4, w // 4, c2)
    self.inp = nnx.Linear(latent_dim, math.prod(self.grid), rngs=rngs)
    self.deconv1 = nnx.ConvTranspose(c2, c1, (3, 3), strides=2, rngs=rngs)
    self.deconv2 = nnx.ConvTranspose(c1, c, (3, 3), strides=2, rngs=rngs)
    self.activation = ACTIVATIONS[activation]

  def __call__(self, z: Array) -> Array:
    h = self.activation(self.inp(z)).reshape(z.shape[0], *self.grid)
    return self.deconv2(self.activation(self.deconv1(h)))


class VAE(nnx.Module):
  """Encoder, decoder and (for learned Gaussian variances) the variance.

  Args:
    image_shape: ``(H, W, C)`` of one example.
    latent_dim: L.
    architecture: ``mlp`` (``hidden_sizes`` dense layers each way) or
      ``conv`` (two stride-2 convolutions with ``hidden_sizes[:2]``
      channels; H and W must be multiples of 4).
    hidden_sizes: widths of the hidden layers (the classic MLP is ``(400,)``).
    activation: a name in ``ACTIVATIONS``.
    likelihood: a name in :data:`vae_jax.decoders.DECODERS`.
    sigma2_mode: a name in :data:`vae_jax.decoders.SIGMA2_MODES` (for
      decoders that use sigma^2).
    sigma2_init: starting sigma^2 of ``learned`` and ``per_pixel``.
    min_sigma2: floor of learned and optimal sigma^2.
    rngs: initialisation randomness.
  """

  def __init__(
    self,
    image_shape: Sequence[int],
    *,
    latent_dim: int,
    architecture: str = "mlp",
    hidden_sizes: Sequence[int] = (400,),
    activation: str = "relu",
    likelihood: str = "bernoulli",
    sigma2_mode: str = "fixed",
    sigma2_init: float = 1.0,
    min_sigma2: float = 1e-4,
    rngs: nnx.Rngs,
  ):
    _check_choice("architecture", architecture, ARCHITECTURES)
    _check_choice("activation", activation, tuple(ACTIVATIONS))
    _check_choice("likelihood", likelihood, decoders.NAMES)
    _check_choice("sigma2_mode", sigma2_mode, decoders.SIGMA2_MODES)
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3:
      raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
    if latent_dim < 1:
      raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    uses_sigma2 = decoders.get(likelihood).uses_sigma2
    if uses_sigma2 and sigma2_mode != "fixed":
      if not min_sigma2 > 0 or not sigma2_init > min_sigma2:
        raise ValueError(
          "need 0 < min_sigma2 < sigma2_init, got "
          f"min_sigma2={min_sigma2}, sigma2_init={sigma2_init}"
        )
    self.image_shape = image_shape
    self.latent_dim = latent_dim
    self.likelihood = likelihood
    self.sigma2_mode = sigma2_mode
    self.min_sigma2 = float(min_sigma2)
    num_dims = math.prod(image_shape)
    if architecture == "mlp":
      hidden = list(hidden_sizes)
      self.encoder = MLP(
        [num_dims, *hidden, 2 * latent_dim], activation, rngs=rngs
      )
      self.decoder = MLP(
        [latent_dim, *hidden[::-1], num_dims], activation, rngs=rngs
      )
    else:
      if image_shape[0] % 4 or image_shape[1] % 4 or len(hidden_sizes) < 2:
        raise ValueError(
          "architecture='conv' needs H and W divisible by 4 and "
          f"two hidden_sizes (channels); got image_shape="
          f"{image_shape}, hidden_sizes={tuple(hidden_sizes)}"
        )
      channels = tuple(hidden_sizes[:2])
      self.encoder = ConvEncoder(
        image_shape, channels, latent_dim, activation, rngs=rngs
      )
      self.decoder = ConvDecoder(
        image_shape, channels, latent_dim, activation, rngs=rngs
      )
    self.architecture = architecture
    if uses_sigma2 and sigma2_mode in ("learned", "per_pixel"):
      shape = () if sigma2_mode == "learned" else image_shape
      raw = _softplus_inverse(sigma2_init - min_sigma2)
      self.sigma2_raw = Sigma2(jnp.full(shape, raw, jnp.float32))

  @property
  def decoder_kind(self) -> decoders.Decoder:
    """The likelihood's registry entry (:mod:`vae_jax.decoders`)."""
    return decoders.get(self.likelihood)

  def encode(self, x: Array) -> tuple[Array, Array]:
    """``[B, H, W, C]`` -> posterior mean and log-variance, each ``[B, L]``."""
    if self.architecture == "mlp":
      x = x.reshape(x.shape[0], -1)
    h = self.encoder(x)
    return h[:, : self.latent_dim], h[:, self.latent_dim :]

  def decode(self, z: Array) -> Array:
    """``[B, L]`` -> logits ``[B, H, W, C]``."""
    return self.decoder(z).reshape(z.shape[0], *self.image_shape)

  def learned_sigma2(self) -> Array:
    """sigma^2 of ``learned`` (scalar) or ``per_pixel`` (``[H, W, C]``)."""
    return self.min_sigma2 + jax.nn.softplus(self.sigma2_raw[...])

  def mean_image(self, logits: Array) -> Array:
    """E[x | z] under the decoder, for pictures: ``[B, H, W, C]`` in [0, 1]."""
    return self.decoder_kind.mean(logits)

  def optimal_sigma2(self, x: Array, logits: Array) -> Array:
    """sigma-VAE's sigma^2 for a batch: its MSE, floored, as a constant."""
    mse = likelihoods.optimal_sigma2_batch(x, self.decoder_kind.mean(logits))
    return jax.lax.stop_gradient(jnp.maximum(mse, self.min_sigma2))


def log_likelihood(
  model: VAE, x: Array, logits: Array, sigma2: Array | float | None = None
) -> Array:
  """log p(x | z) of each example in nats, ``[B]``: the registry entry of the
  model's likelihood (:mod:`vae_jax.decoders`), vmapped over the batch.

  Args:
    model: the VAE (its likelihood and sigma2_mode choose the formula).
    x: ``[B, H, W, C]`` in [0, 1].
    logits: decoder output for the sampled z, ``[B, H, W, C]``.
    sigma2: the Gaussian variance for ``fixed`` and ``optimal`` modes (for
      ``optimal``, None means the batch's own optimum). Ignored otherwise.
  """
  decoder = model.decoder_kind
  if decoder.uses_sigma2:
    if model.sigma2_mode in ("learned", "per_pixel"):
      sigma2 = model.learned_sigma2()
    elif model.sigma2_mode == "optimal" and sigma2 is None:
      sigma2 = model.optimal_sigma2(x, logits)
    elif sigma2 is None:
      raise ValueError("sigma2_mode='fixed' needs sigma2")
  return jax.vmap(decoder.log_likelihood, in_axes=(0, 0, None))(
    x, logits, sigma2
  )


def reparameterize(key: Array, mean: Array, log_variance: Array) -> Array:
  """z ~ q(z | x) with eps ~ N(0, I) drawn from ``key``; shape of ``mean``
  (:func:`vae_jax.divergences.reparameterize`)."""
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return divergences.reparameterize(mean, log_variance, eps)


def _softplus_inverse(y: float) -> float:
  return y + math.log(-math.expm1(-y))


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")
