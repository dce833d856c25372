"""The set-up both trainers share: mesh, data split, step counts, and the
checkpointer and monitor of a run that resumes where it stopped.

A trainer calls :func:`plan_run` (what to run, from the config and the
data), builds its dataset, task and initial state, then :func:`open_run`
(restores the latest checkpoint of the workdir, if any, and opens the
monitor), and hands both to :func:`dagan_jax.training.loop.run_steps`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Iterator

from jax.sharding import Mesh

from dagan_jax.training import parallel
from dagan_jax.training.checkpointing import Checkpointer, abstract_like
from dagan_jax.training.monitor import Monitor


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What a training run covers."""
  mesh: Mesh
  global_batch_size: int
  host_batch_size: int        # this host's share of the global batch
  split_data: Any             # pipeline.SplitData of the train split
  steps_per_epoch: int
  total_steps: int
  skip_bad: bool              # train_params.skip_bad_data


def plan_run(config, *, max_steps: int | None = None,
             min_frames: int | None = None) -> RunPlan:
  """Mesh over every device, the checked train split, and the step counts.

  An epoch is ``num_repeats`` records per person (``id_sampling``) or per
  clip, over all hosts; the run lasts ``train_params.max_steps`` steps when
  set, else ``num_epochs`` epochs; ``max_steps`` (the command's
  ``--max-steps``) overrides both. ``min_frames``: frames a clip needs
  (default: the pair pipeline's).
  """
  from dagan_jax.input import clips as clips_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import pipeline  # pylint: disable=import-outside-toplevel
  tp = config.train_params
  mesh = parallel.make_mesh()
  global_bs = int(tp.batch_size)
  skip_bad = bool(tp.skip_bad_data)
  kwargs = {} if min_frames is None else {"min_frames": int(min_frames)}
  split_data = pipeline.open_split(config.dataset_params, "train",
                                   skip_bad=skip_bad, **kwargs)
  groups = clips_lib.group_clips(split_data.clips,
                                 bool(config.dataset_params.id_sampling))
  steps_per_epoch = max(len(groups) * int(tp.num_repeats) // global_bs, 1)
  total_steps = int(tp.max_steps or 0) or int(tp.num_epochs) * steps_per_epoch
  if max_steps is not None:
    total_steps = int(max_steps)
  return RunPlan(mesh=mesh, global_batch_size=global_bs,
                 host_batch_size=parallel.per_host_batch_size(global_bs, mesh),
                 split_data=split_data, steps_per_epoch=steps_per_epoch,
                 total_steps=total_steps, skip_bad=skip_bad)


@dataclasses.dataclass
class OpenRun:
  """A run's state at its start (restored or initial) and its outputs."""
  state: Any
  start: int                  # the first step to run
  skipped: int                # clips skipped as bad before ``start``
  ckpt: Checkpointer
  monitor: Monitor
  notes: list[str]            # what to tell the user (resumed from ...)


def open_run(workdir: str | pathlib.Path, config, plan: RunPlan, state: Any,
             data_iter: Iterator[Any], *, progress: bool,
             description: str) -> OpenRun:
  """Restores the latest checkpoint of ``workdir`` into ``state`` (and the
  data iterator's position), else keeps the initial ``state`` (replicated
  on the plan's mesh), and opens the monitor from that step on."""
  tp = config.train_params
  ckpt = Checkpointer(pathlib.Path(workdir),
                      max_to_keep=int(tp.keep_checkpoints))
  notes, meta = [], {}
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(abstract_like(state), data_iter)
    notes.append(f"resumed from {ckpt.directory / str(ckpt.latest_step())}")
  start = int(parallel.to_host(state.step))
  monitor = Monitor(workdir, total_steps=plan.total_steps, initial_step=start,
                    progress=progress, description=description)
  return OpenRun(state=state, start=start,
                 skipped=int(meta.get("skipped", 0)), ckpt=ckpt,
                 monitor=monitor, notes=notes)
