"""Optimisers as the official training scripts build them.

DaGAN / FOMM (``train.py``): one Adam per network (keypoint detector,
generator, discriminator) with ``betas=(0.5, 0.999)`` and the network's own
learning rate, decayed by 0.1 at each of ``train_params.epoch_milestones``
(``MultiStepLR`` stepped once per epoch). A network whose learning rate is 0
is frozen: its optimiser is ``optax.set_to_zero()`` and its parameters never
change (the official code then skips loading/saving its optimiser).

Face-Depth-Network (monodepth2 ``trainer.py``): one Adam (PyTorch's default
betas 0.9, 0.999) over the depth encoder, depth decoder and pose networks with
``learning_rate`` decayed by 0.1 every ``scheduler_step_size`` epochs
(``StepLR``).

Schedules here are functions of the *optimiser step count*, converted from
epochs with ``steps_per_epoch``; so a run resumed from a checkpoint continues
on the same schedule (the count is part of the optimiser state).
"""

from __future__ import annotations

from typing import Sequence

import optax


def multistep_schedule(lr: float, milestones_epochs: Sequence[int],
                       steps_per_epoch: int, gamma: float = 0.1
                       ) -> optax.Schedule:
  """``MultiStepLR``: ``lr * gamma**(number of milestones passed)``.

  PyTorch steps the scheduler at the end of each epoch, so from the first
  step of epoch ``m`` on the rate is decayed: optimiser step index
  ``m * steps_per_epoch`` is the first with the new rate.
  """
  boundaries = {int(m) * int(steps_per_epoch): gamma
                for m in sorted(set(int(m) for m in milestones_epochs)) if m > 0}
  return optax.piecewise_constant_schedule(lr, boundaries)


def step_schedule(lr: float, step_size_epochs: int, steps_per_epoch: int,
                  num_epochs: int, gamma: float = 0.1) -> optax.Schedule:
  """``StepLR``: decay by ``gamma`` every ``step_size_epochs`` epochs."""
  milestones = list(range(step_size_epochs, max(num_epochs, 1) + 1,
                          max(step_size_epochs, 1)))
  return multistep_schedule(lr, milestones, steps_per_epoch, gamma)


def adam(schedule: optax.Schedule | float, b1: float, b2: float = 0.999,
         eps: float = 1e-8) -> optax.GradientTransformation:
  """``torch.optim.Adam`` (no weight decay) with a learning-rate schedule."""
  return optax.adam(schedule, b1=b1, b2=b2, eps=eps)


def talking_head_optimizers(train_params, steps_per_epoch: int
                            ) -> dict[str, optax.GradientTransformation]:
  """``{'kp_detector', 'generator', 'discriminator'}`` optimisers (official)."""
  milestones = list(train_params["epoch_milestones"] or [])
  out = {}
  for name, key in (("kp_detector", "lr_kp_detector"),
                    ("generator", "lr_generator"),
                    ("discriminator", "lr_discriminator")):
    lr = float(train_params[key])
    if lr == 0:
      out[name] = optax.set_to_zero()
    else:
      out[name] = adam(multistep_schedule(lr, milestones, steps_per_epoch),
                       b1=0.5, b2=0.999)
  return out


def depth_optimizer(train_params, steps_per_epoch: int
                    ) -> optax.GradientTransformation:
  """The depth stage's single Adam (monodepth2 defaults)."""
  return adam(step_schedule(float(train_params["learning_rate"]),
                            int(train_params["scheduler_step_size"]),
                            steps_per_epoch,
                            int(train_params["num_epochs"])),
              b1=0.9, b2=0.999)


def current_lr(schedule_or_opt_lr: optax.Schedule | float, step: int) -> float:
  """The learning rate at optimiser step ``step`` (for logging)."""
  if callable(schedule_or_opt_lr):
    return float(schedule_or_opt_lr(step))
  return float(schedule_or_opt_lr)
