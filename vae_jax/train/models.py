"""The VAE: a Flax NNX encoder q(z|x) and a decoder whose output fits its likelihood.

Shapes: images ``[B, H, W, C]`` with values in [0, 1]; latents ``[B, L]``.
The encoder returns the mean and log-variance of a diagonal Gaussian
q(z|x); the decoder returns ``[B, *output_shape]``, the registry entry's
output (:meth:`vae_jax.decoders.Decoder.output_shape`): logits ``[B, H, W,
C]`` for most, ``[B, H, W, C, k]`` for the discretised logistics. What the
output means is set by the likelihood (see :func:`log_likelihood`):

- ``bernoulli`` and ``continuous_bernoulli``: the logits are the parameter;
- ``gaussian`` and ``laplace``: the mean (location) is ``sigmoid(logits)``
  and sigma^2 (the Laplace's scale b) comes from ``sigma2_mode``: ``fixed`` (a
  number given by the caller), ``learned`` (one shared scalar), ``per_pixel``
  (one per data dimension), or, for the Gaussian, ``optimal`` (the sigma-VAE
  of Rybkin et al. 2021: the closed-form maximiser, the batch MSE, treated as
  a constant). Learned values are ``min_sigma2 + softplus(raw)`` so they
  never fall below the floor;
- ``discretized_logistic`` (``k = 2``) and ``discretized_logistic_mixture``
  (``k = 3 * mixture_components``): masses on the data's ``levels``.

The training code works with the functional form, ``graphdef, params =
nnx.split(model)`` and ``nnx.merge(graphdef, params)`` inside jit, so the
parameters are a plain pytree that optax, orbax and ``jax.vmap`` all handle.
"""

from collections.abc import Sequence
import functools
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
INITS = ("lecun", "glorot")
ENCODER_VARIANCES = ("log_variance", "log_std")
Array = jax.Array


class Sigma2(nnx.Param):
  """The decoder variance's raw parameter (kept apart so it can be found)."""


class MLP(nnx.Module):
  """Dense layers with an activation between them, none after the last.

  ``init``: the kernels' initialiser, ``"lecun"`` (Flax's default, LeCun
  normal) or ``"glorot"`` (:func:`glorot_uniform`; the last layer counted as
  ``heads`` layers side by side); ``output_bias``: the last layer's starting
  bias (default zeros)."""

  def __init__(
    self,
    sizes: Sequence[int],
    activation: str,
    *,
    rngs: nnx.Rngs,
    init: str = "lecun",
    heads: int = 1,
    output_bias=None,
  ):
    pairs = list(zip(sizes[:-1], sizes[1:]))
    layers = []
    for i, (a, b) in enumerate(pairs):
      last = i == len(pairs) - 1
      options = {}
      if init == "glorot":
        options["kernel_init"] = glorot_uniform(heads if last else 1)
      if last and output_bias is not None:
        bias = jnp.asarray(output_bias, jnp.float32).reshape(b)
        options["bias_init"] = lambda key, shape, dtype=None: bias
      layers.append(nnx.Linear(a, b, rngs=rngs, **options))
    self.layers = nnx.List(layers)
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
  """A dense layer to a (H/4, W/4) map, then two stride-2 transposed convs
  to ``out_channels`` (default: the image's C)."""

  def __init__(
    self,
    image_shape,
    channels,
    latent_dim,
    activation,
    *,
    out_channels=None,
    rngs,
  ):
    h, w, c = image_shape
    c1, c2 = channels
    self.grid = (h // 4, w // 4, c2)
    self.inp = nnx.Linear(latent_dim, math.prod(self.grid), rngs=rngs)
    self.deconv1 = nnx.ConvTranspose(c2, c1, (3, 3), strides=2, rngs=rngs)
    self.deconv2 = nnx.ConvTranspose(
      c1, out_channels or c, (3, 3), strides=2, rngs=rngs
    )
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
    levels: the data's grey levels (read by the masses on levels).
    mixture_components: n of ``discretized_logistic_mixture``.
    init: the dense kernels' initialiser, ``"lecun"`` (Flax's default) or
      ``"glorot"`` (Glorot-uniform, the encoder's mean and variance outputs
      counted as two layers, as Burda et al.'s code builds them); ``mlp``
      only.
    output_bias: the decoder's starting output bias, one value per output
      (e.g. the logit of the mean training image); None: zeros. ``mlp`` only.
    encoder_variance: what the encoder's second half of outputs is:
      ``"log_variance"`` (log sigma^2) or ``"log_std"`` (log sigma, so
      sigma = exp(linear) as in Burda et al.: log sigma^2 is twice it).
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
    levels: int = 256,
    mixture_components: int = 5,
    init: str = "lecun",
    output_bias=None,
    encoder_variance: str = "log_variance",
    rngs: nnx.Rngs,
  ):
    _check_choice("architecture", architecture, ARCHITECTURES)
    _check_choice("activation", activation, tuple(ACTIVATIONS))
    _check_choice("init", init, INITS)
    _check_choice("encoder_variance", encoder_variance, ENCODER_VARIANCES)
    if architecture != "mlp" and (init != "lecun" or output_bias is not None):
      raise ValueError("init and output_bias apply to architecture='mlp' only")
    _check_choice("likelihood", likelihood, decoders.NAMES)
    _check_choice("sigma2_mode", sigma2_mode, decoders.SIGMA2_MODES)
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3:
      raise ValueError(f"image_shape must be (H, W, C), got {image_shape}")
    if latent_dim < 1:
      raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    decoder = decoders.get(likelihood)
    uses_sigma2 = decoder.uses_sigma2
    if uses_sigma2:
      _check_choice("sigma2_mode", sigma2_mode, decoder.sigma2_modes)
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
    self.levels = int(levels)
    self.output_shape = decoder.output_shape(image_shape, mixture_components)
    num_dims = math.prod(image_shape)
    num_outputs = math.prod(self.output_shape)
    self.encoder_variance = encoder_variance
    if output_bias is not None and math.prod(jnp.shape(output_bias)) != (
      num_outputs
    ):
      raise ValueError(
        f"output_bias must hold one value per decoder output "
        f"{self.output_shape}, got shape {jnp.shape(output_bias)}"
      )
    self.encoder: MLP | ConvEncoder
    self.decoder: MLP | ConvDecoder
    if architecture == "mlp":
      hidden = list(hidden_sizes)
      self.encoder = MLP(
        [num_dims, *hidden, 2 * latent_dim],
        activation,
        rngs=rngs,
        init=init,
        heads=2,
      )
      self.decoder = MLP(
        [latent_dim, *hidden[::-1], num_outputs],
        activation,
        rngs=rngs,
        init=init,
        output_bias=output_bias,
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
        image_shape,
        channels,
        latent_dim,
        activation,
        out_channels=math.prod(self.output_shape[2:]),
        rngs=rngs,
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
    if self.encoder_variance == "log_std":
      return h[:, : self.latent_dim], 2 * h[:, self.latent_dim :]
    return h[:, : self.latent_dim], h[:, self.latent_dim :]

  def decode(self, z: Array) -> Array:
    """``[B, L]`` -> the decoder's output ``[B, *output_shape]``: logits
    ``[B, H, W, C]``, or ``[B, H, W, C, k]`` (see the module docstring)."""
    return self.decoder(z).reshape(z.shape[0], *self.output_shape)

  def learned_sigma2(self) -> Array:
    """sigma^2 of ``learned`` (scalar) or ``per_pixel`` (``[H, W, C]``)."""
    return self.min_sigma2 + jax.nn.softplus(self.sigma2_raw[...])

  def mean_image(self, output: Array) -> Array:
    """E[x | z] under the decoder, for pictures: ``[B, H, W, C]`` in [0, 1]."""
    return self.decoder_kind.mean(output, levels=self.levels)

  def optimal_sigma2(self, x: Array, logits: Array) -> Array:
    """sigma-VAE's sigma^2 for a batch: its MSE, floored, as a constant."""
    mse = likelihoods.optimal_sigma2_batch(x, self.mean_image(logits))
    return jax.lax.stop_gradient(jnp.maximum(mse, self.min_sigma2))


def log_likelihood(
  model: VAE, x: Array, logits: Array, sigma2: Array | float | None = None
) -> Array:
  """log p(x | z) of each example in nats, ``[B]``: the registry entry of the
  model's likelihood (:mod:`vae_jax.decoders`), vmapped over the batch.

  Args:
    model: the VAE (its likelihood and sigma2_mode choose the formula).
    x: ``[B, H, W, C]`` in [0, 1].
    logits: decoder output for the sampled z, ``[B, *model.output_shape]``.
    sigma2: the Gaussian variance (the Laplace's scale) for ``fixed`` and
      ``optimal`` modes (for ``optimal``, None means the batch's own
      optimum). Ignored otherwise.
  """
  decoder = model.decoder_kind
  if decoder.uses_sigma2:
    if model.sigma2_mode in ("learned", "per_pixel"):
      sigma2 = model.learned_sigma2()
    elif model.sigma2_mode == "optimal" and sigma2 is None:
      sigma2 = model.optimal_sigma2(x, logits)
    elif sigma2 is None:
      raise ValueError("sigma2_mode='fixed' needs sigma2")
  one = functools.partial(decoder.log_likelihood, levels=model.levels)
  return jax.vmap(one, in_axes=(0, 0, None))(x, logits, sigma2)


def reparameterize(key: Array, mean: Array, log_variance: Array) -> Array:
  """z ~ q(z | x) with eps ~ N(0, I) drawn from ``key``; shape of ``mean``
  (:func:`vae_jax.divergences.reparameterize`)."""
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  return divergences.reparameterize(mean, log_variance, eps)


def glorot_uniform(heads: int = 1):
  """Glorot & Bengio (2010)'s initialiser for tanh layers: U(-s, s) with
  s = sqrt(6 / (fan_in + fan_out)), for a kernel ``[fan_in, heads *
  fan_out]`` that is ``heads`` layers side by side."""

  def init(key, shape, dtype=jnp.float32):
    fan_in, outputs = shape
    scale = math.sqrt(6 / (fan_in + outputs // heads))
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def _softplus_inverse(y: float) -> float:
  return y + math.log(-math.expm1(-y))


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")
