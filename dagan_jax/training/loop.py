"""What both trainers share: the step loop and verified, lagged metrics.

:func:`run_steps` feeds batches to a compiled step until the last step,
checkpoints on its cadence, at the end and when a stop signal arrives
(SIGTERM / SIGINT: save, then return so the run can be resumed), and closes
the monitor and checkpointer if anything raises.

**Stopping on many hosts.** A signal reaches one host, but every host must
save the same step (a checkpoint is written by all of them together). Each
host puts the signal it has received (0: none) into its share of the batch
(``batch[STOP_KEY]``); the step takes the largest over all devices
(:func:`stop_signal`) and returns it with its metrics. The metrics of a
step are read by every host at the same point of the loop, so all of them
learn of the signal together, one step after it arrived, save that step and
stop: an agreement that costs no extra synchronisation.

A step's metrics are fetched one step late, so the host never makes the
device wait (the next step is already dispatched); before a checkpoint they
are fetched at once, so only verified states are saved. Each fetched step is
checked: a step whose ``finite`` flag is 0 (its loss or gradient was NaN or
Inf; the step then left the state unchanged) raises
:class:`~dagan_jax.errors.NonFiniteLossError` naming the step and the
offending terms, after any checkpoint being written has finished.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dagan_jax.errors import NonFiniteLossError
from dagan_jax.training import parallel
from dagan_jax.training.checkpointing import Checkpointer, PreemptionGuard
from dagan_jax.training.monitor import Monitor


#: Batch and metrics key of the stop signal (see the module docstring).
STOP_KEY = "stop_signal"


def stop_signal(batch: Mapping[str, Any], axis_name: str | None) -> jax.Array:
  """Inside a step: the largest stop signal any host put into the batch
  (over every device of ``axis_name``; 0 when none), as float32 for the
  metrics. Batches without :data:`STOP_KEY` (tests, benchmarks) give 0."""
  if STOP_KEY not in batch:
    return jnp.zeros((), jnp.float32)
  s = jnp.max(batch[STOP_KEY]).astype(jnp.float32)
  return jax.lax.pmax(s, axis_name) if axis_name else s


class LaggedMetrics:
  """Checks and logs each step's metrics, one step behind the device;
  :attr:`stop` is the stop signal the checked steps carried (0: none)."""

  def __init__(self, monitor: Monitor, ckpt: Checkpointer, *, total_steps: int,
               log_every: int, progress_keys: Mapping[str, str],
               extra: Callable[[int], Mapping[str, Any]] = lambda step: {}):
    self.monitor = monitor
    self.ckpt = ckpt
    self.total_steps = total_steps
    self.log_every = max(int(log_every), 1)
    self.progress_keys = dict(progress_keys)
    self.extra = extra
    self.last: dict[str, float] = {}
    self.stop = 0
    self._pending: tuple[int, Any] | None = None

  def check(self, step: int, metrics: Any) -> dict[str, float]:
    values = {k: float(v) for k, v in parallel.to_host(metrics).items()}
    self.stop = self.stop or int(values.pop(STOP_KEY, 0))
    if values.pop("finite", 1.0) != 1.0:
      bad = sorted(k for k, v in values.items() if not math.isfinite(v)) or [
          "a gradient"]
      self.ckpt.wait()
      raise NonFiniteLossError(
          f"step {step}: non-finite {', '.join(bad)}; the state of step "
          f"{step - 1} is kept and the last checkpoint is step "
          f"{self.ckpt.latest_step()} in {self.ckpt.directory}. Lower the "
          "learning rate, check the data, or use compute_dtype='float32'.")
    return values

  def _process(self, step: int, metrics: Any) -> None:
    values = self.check(step, metrics)
    if step % self.log_every == 0 or step == 1 or step == self.total_steps:
      self.last = values
      self.monitor.scalars(step, {**values, **self.extra(step)})
    self.monitor.advance(step, {label: values.get(key, 0.0)
                                for label, key in self.progress_keys.items()})

  def push(self, step: int, metrics: Any) -> None:
    """Records step ``step``'s metrics; checks and logs the previous step's."""
    if self._pending is not None:
      self._process(*self._pending)
    self._pending = (step, metrics)

  def flush(self) -> None:
    """Checks and logs the pending step now (before a checkpoint)."""
    if self._pending is not None:
      pending, self._pending = self._pending, None
      self._process(*pending)


@dataclasses.dataclass
class Progress:
  """Where a :func:`run_steps` loop stands (read by logging callbacks)."""
  step: int
  skipped: int
  signal: str | None = None
  seconds: float = 0.0


def run_steps(state: Any, progress: Progress, *,
              step_fn: Callable[[Any, Any, jax.Array], tuple[Any, Any]],
              data_iter: Iterator[dict[str, Any]], mesh, base_key: jax.Array,
              total_steps: int, ckpt: Checkpointer, ckpt_every: int,
              checkpoint_meta: Callable[[int], Mapping[str, Any]],
              lagged: LaggedMetrics, monitor: Monitor,
              first_batch: Callable[[dict[str, Any]], None] | None = None,
              after_step: Callable[[int, Any], None] | None = None) -> Any:
  """Runs ``state, metrics = step_fn(state, batch, key)`` from
  ``progress.step`` to ``total_steps`` and returns the final state.

  Each host batch's ``skipped`` count (clips the pipeline dropped as bad) is
  added to ``progress.skipped``; the step's key is ``fold_in(base_key,
  step)``. A checkpoint (``checkpoint_meta(skipped)`` as its metadata) is
  written, after the pending metrics are verified, every ``ckpt_every``
  steps, at the last step and when a stop signal has been agreed on (the
  step after it arrived; module docstring): ``step_fn`` must return
  :func:`stop_signal` of its batch under :data:`STOP_KEY` in its metrics;
  after a signal the loop returns with ``progress.signal`` set.
  ``first_batch`` sees the first host batch, ``after_step(step, state)``
  runs after each step's checkpoint. ``progress.seconds`` is the loop's
  wall time.
  """
  t0 = time.perf_counter()
  try:
    with PreemptionGuard() as guard:
      while progress.step < total_steps:
        local = next(data_iter)
        progress.skipped += int(np.sum(local.pop("skipped", 0)))
        if first_batch is not None:
          first_batch(local)
          first_batch = None
        rows = len(next(iter(local.values())))
        local[STOP_KEY] = np.full((rows,), guard.requested or 0, np.int32)
        state, metrics = step_fn(state, parallel.global_batch(local, mesh),
                                 jax.random.fold_in(base_key, progress.step))
        progress.step += 1
        step = progress.step
        lagged.push(step, metrics)
        # The signal every host has seen by now (the previous step's): the
        # same on all of them, so they all save this step and stop.
        stop = lagged.stop
        if step % ckpt_every == 0 or stop or step == total_steps:
          lagged.flush()  # only verified states are saved
          ckpt.save(step, state, data_iter, checkpoint_meta(progress.skipped),
                    force=True)
        if after_step is not None:
          after_step(step, state)
        if stop:
          progress.signal = stop
          monitor.write(f"stopping at step {step} on signal {stop}; "
                        "rerun the same command to resume from this checkpoint")
          break
      ckpt.wait()
  except BaseException:
    monitor.close()
    ckpt.close()
    raise
  progress.seconds = time.perf_counter() - t0
  return state
