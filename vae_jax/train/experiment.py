"""One run, start to finish: ``train_and_evaluate(config, workdir)``.

Writes under ``workdir``: ``config.json`` (the resolved config),
``metrics.jsonl`` and ``tensorboard/`` (per epoch), ``checkpoints/`` (orbax:
step, parameters, optimiser state, PRNG key), ``summary.json`` (the
:class:`~vae_jax.train.results.Result`) and ``figures/*.png``. A run is a
group of one member of :func:`vae_jax.train.engine.run_group`, the loop
sweeps use too. Calling it again on the same workdir resumes from the newest
checkpoint; the result is bit-identical to a run that was never stopped (on
CPU), because everything random is drawn from the key inside the
checkpointed state.
"""

import os

import ml_collections

from vae_jax.train import config as config_lib
from vae_jax.train import engine
from vae_jax.train import files
from vae_jax.train import group as group_lib
from vae_jax.train import member as member_lib
from vae_jax.train import results
from vae_jax.train import workdir as workdir_lib


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str
) -> results.Result:
  """Trains, checkpoints, evaluates and plots one VAE; returns its Result.

  Raises:
    ConfigError: a bad config, or one that differs from the config of the
      run already in ``workdir`` in a key that changes its trajectory, or
      fewer ``num_epochs`` than the workdir's run has trained.
    WorkdirError: ``workdir`` cannot be made, or another process uses it.
    CheckpointError: checkpoints exist but none can be restored.
    DataError, DataUnavailableError: data that cannot be used or loaded.
    NonFiniteLossError: the loss or an update became NaN or infinite.
  """
  config_lib.validate(config)
  workdir = workdir_lib.prepare(workdir)
  with workdir_lib.locked(workdir):
    workdir_lib.check_resumable(workdir, config.to_dict())
    files.write_json(os.path.join(workdir, "config.json"), config.to_dict())
    group = group_lib.Group.build([member_lib.Member(config)])
    [result] = engine.run_group(
      group, workdir, engine.Policy(stop_on_divergence=True, figures=True)
    )
    files.write_json(os.path.join(workdir, "summary.json"), result.to_dict())
  return result
