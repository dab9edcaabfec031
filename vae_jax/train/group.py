"""A group: the members that share one compiled program, placed on a mesh.

A group is K members (:class:`~vae_jax.train.member.Member`) whose configs
differ only in the numbers of :data:`vae_jax.sweep.VMAPPED`; a run is a group
of one member. :meth:`Group.build` builds every member
(:func:`~vae_jax.train.member.build`), pads them to a multiple of the
mesh's device count with copies of the first member (dropped from every
result), stacks their states and hyperparameters on a leading ``[K]`` axis
sharded by member, and replicates the raw training images.

The group owns its folder layout: a run's group lives in the run's workdir,
group g of a sweep in ``<workdir>/groups/<g:03d>`` (:func:`directory`); its
checkpoints are ``checkpoints/`` there (:meth:`Group.restore`).
"""

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from vae_jax.train import checkpoints
from vae_jax.train import data
from vae_jax.train import member as member_lib
from vae_jax.train import program

GROUPS = "groups"
CHECKPOINTS = "checkpoints"
RESULTS = "results.json"  # a sweep's finished group's Results


def directory(workdir: str, index: int | None) -> str:
  """Where a group's checkpoints, logs and figures go: ``workdir`` itself
  for a run's group (``index`` None), ``<workdir>/groups/<index:03d>`` for
  group ``index`` of a sweep."""
  if index is None:
    return workdir
  return os.path.join(workdir, GROUPS, f"{index:03d}")


def sweep_directories(workdir: str) -> list[str]:
  """The folders of the groups a sweep's ``workdir`` holds, sorted."""
  root = os.path.join(workdir, GROUPS)
  if not os.path.isdir(root):
    return []
  return [os.path.join(root, g) for g in sorted(os.listdir(root))]


@dataclasses.dataclass(frozen=True)
class Group:
  """K members built, stacked and placed on ``mesh``.

  Attributes:
    members: the K members, in order.
    index: the group's index in its sweep; None for a run's group.
    dataset: the data every member trains on.
    mesh: the one-axis device mesh (:func:`program.make_mesh`).
    steps: optimiser steps per epoch.
    parts: the first member's built parts; its graphdef, optimiser and
      schedule are the group's.
    padded: the K configs and the padding copies of the first.
    state: the fresh :class:`~vae_jax.train.program.GroupState`, sharded by
      member (``[K_padded, ...]`` leaves).
    hparams: the objective's scalars, ``[K_padded]`` each, sharded.
    raw_train: the raw training levels ``[N, H, W, C]``, replicated.
    key_data: ``[K_padded, 2]`` data of each member's evaluation key,
      sharded.
    test_images: the evaluation images ``[N_test, H, W, C]`` in [0, 1], on
      the host (:func:`data.evaluation_images`).
  """

  members: tuple[member_lib.Member, ...]
  index: int | None
  dataset: data.Dataset
  mesh: jax.sharding.Mesh
  steps: int
  parts: member_lib.Parts
  padded: tuple[ml_collections.ConfigDict, ...]
  state: program.GroupState
  hparams: dict
  raw_train: jax.Array
  key_data: jax.Array
  test_images: np.ndarray

  @classmethod
  def build(
    cls,
    members: list[member_lib.Member],
    *,
    mesh: jax.sharding.Mesh | None = None,
    index: int | None = None,
  ) -> "Group":
    """Loads the data, builds and places every member.

    Args:
      members: configs that differ only in the numbers a group vmaps.
      mesh: devices; default one local device.
      index: the group's index in its sweep; None for a run.
    """
    first = members[0].config
    dataset = member_lib.load_data(first)
    steps = member_lib.steps_per_epoch(first, len(dataset.train))
    mesh = mesh or program.make_mesh(jax.local_devices()[:1])
    configs = [m.config for m in members]
    padded = configs + [first] * (
      program.padded_size(len(configs), mesh.size) - len(configs)
    )
    bias = member_lib.decoder_output_bias(first, dataset)
    built = [
      member_lib.build(
        c,
        dataset.image_shape,
        steps,
        levels=dataset.levels,
        output_bias=bias,
      )
      for c in padded
    ]
    on_members = program.member_sharding(mesh)
    key_data = np.stack(
      [
        np.asarray(jax.random.key_data(member_lib.evaluation_key(c)))
        for c in padded
      ]
    )
    return cls(
      members=tuple(members),
      index=index,
      dataset=dataset,
      mesh=mesh,
      steps=steps,
      parts=built[0],
      padded=tuple(padded),
      state=program.place(
        program.initial_state([b.state for b in built]), on_members
      ),
      hparams=program.place(
        program.stack([b.hparams for b in built]), on_members
      ),
      raw_train=program.place(dataset.train, program.replicated(mesh)),
      key_data=program.place(key_data, on_members),
      test_images=data.evaluation_images(dataset, first.eval_seed),
    )

  @property
  def config(self) -> ml_collections.ConfigDict:
    """The first member's config: the keys every member shares."""
    return self.members[0].config

  @property
  def size(self) -> int:
    """K, the number of members (without the padding)."""
    return len(self.members)

  def directory(self, workdir: str) -> str:
    """This group's folder under ``workdir`` (:func:`directory`)."""
    return directory(workdir, self.index)

  def checkpointer(self, workdir: str) -> checkpoints.Checkpointer:
    """The checkpoints of this group under ``workdir``."""
    return checkpoints.Checkpointer(
      os.path.join(self.directory(workdir), CHECKPOINTS)
    )

  def restore(self, workdir: str) -> tuple[int, program.GroupState]:
    """``(epoch, state)`` of this group's newest checkpoint under
    ``workdir``, placed as :attr:`state` is; ``(0, state)`` if it has none.

    Raises:
      CheckpointError: checkpoints exist but none can be restored.
    """
    ckpt = self.checkpointer(workdir)
    try:
      epoch, state = ckpt.restore_latest(self.state)
    finally:
      ckpt.close()
    return epoch, state  # type: ignore[return-value]  # as the template

  def test_sigma2(self, state: program.GroupState) -> "TestSigma2":
    """The sigma^2 that scores each member's test set (see
    :class:`TestSigma2`): the config's ``sigma2`` (``fixed``), the model's
    own (``learned``, ``per_pixel``), or sigma-VAE's (``optimal``) fitted
    on the TRAINING images, so test numbers never use test data to set it."""
    config = self.config
    if not member_lib.uses_sigma2(config):
      return TestSigma2(None, [None] * self.size)
    if config.sigma2_mode == "fixed":
      given = np.array([c.sigma2 for c in self.padded], np.float32)
    elif config.sigma2_mode == "optimal":
      given = program.fitted_sigma2(
        self.parts.graphdef,
        self.mesh,
        state.train.params,
        self.raw_train,
        self.dataset,
        latent_dim=config.latent_dim,
        eval_seed=config.eval_seed,
        min_sigma2=config.min_sigma2,
      ).astype(np.float32)
    else:
      learned = program.learned_sigma2(self.parts.graphdef, state.train.params)
      return TestSigma2(
        None, [float(np.float32(v)) for v in learned[: self.size]]
      )
    return TestSigma2(
      program.place(given, program.member_sharding(self.mesh)),
      [float(v) for v in given[: self.size]],
    )


@dataclasses.dataclass(frozen=True)
class TestSigma2:
  """How a group's test set is scored where a decoder has a sigma^2.

  Attributes:
    given: ``[K_padded]`` float32 values handed to the evaluators, sharded
      by member; None where each model scores with its own learned sigma^2
      (or the decoder has none).
    used: per member, the sigma^2 as used (float32 values; a per-pixel
      one's mean over pixels); None where the decoder has none.
  """

  given: jax.Array | None
  used: list[float | None]
