"""``dagan-jax info``: what a config builds, and what one training step costs.

  dagan-jax info --config CONFIG [--memory] [--batch-per-device N] [--json OUT]

Prints the parameter count of every network (trainable = keypoint detector +
generator + discriminator, next to the papers' figures: DaGAN 63.1M,
DaGAN++ 85.2M) and, with ``--memory``, compiles one training step of the
config for one device (nothing runs) and prints XLA's peak memory for it and
per sample, with the step's FLOPs.
"""

from __future__ import annotations

import argparse

ACCEPTS_EXTRA_ARGS = True

PAPER_TRAINABLE = {"dagan": 63.1e6, "daganpp": 85.2e6}


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True,
                      help="config file (configs/*.py[:ARG] or official YAML)")
  parser.add_argument("--memory", action="store_true",
                      help="compile one training step and report its peak "
                           "memory and FLOPs (takes a while at full size)")
  parser.add_argument("--batch-per-device", type=int, default=1,
                      help="samples per device for --memory (default 1)")
  parser.add_argument("--json", default=None, help="also write the figures here")
  parser.epilog = "Config overrides: --config.SECTION.KEY=VALUE"


def collect(cfg, *, memory: bool = False, batch_per_device: int = 1) -> dict:
  from dagan_jax.models import build as build_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.models import variants  # pylint: disable=import-outside-toplevel
  with_pose = cfg.trainer == "depth"
  counts = build_lib.param_counts(cfg, with_pose=with_pose)
  trainable = sum(counts.get(n, 0) for n in ("kp_detector", "generator",
                                              "discriminator"))
  model = cfg.model_params.model
  info = {"name": cfg.name, "model": model,
          "generator_type": cfg.model_params.generator_type,
          "trainer": cfg.trainer,
          "frame_shape": list(cfg.dataset_params.frame_shape),
          "num_kp": int(cfg.model_params.common_params.num_kp),
          "param_counts": counts, "trainable_talking_head": trainable,
          "paper_trainable": PAPER_TRAINABLE.get(model),
          "uses_depth_network": bool(variants.requires_depth_network(cfg))}
  if memory:
    from dagan_jax.training import memory as memory_lib  # pylint: disable=import-outside-toplevel
    info["train_step"] = memory_lib.train_step_cost(cfg, batch_per_device)
  return info


def format_info(info: dict) -> str:
  from dagan_jax.training.memory import human_bytes  # pylint: disable=import-outside-toplevel
  lines = [f"{info['name'] or 'config'}: {info['model']} "
           f"({info['generator_type']}), {info['num_kp']} keypoints, frames "
           f"{'x'.join(map(str, info['frame_shape']))}, trainer "
           f"{info['trainer']}"]
  lines.append("parameters:")
  for name, n in info["param_counts"].items():
    lines.append(f"  {name:<15} {n:>13,}  ({n / 1e6:.2f}M)")
  t = info["trainable_talking_head"]
  paper = info.get("paper_trainable")
  lines.append(f"  {'trainable':<15} {t:>13,}  ({t / 1e6:.2f}M; keypoint detector "
               "+ generator + discriminator"
               + (f"; the paper's full {info['model']}: {paper / 1e6:.1f}M)"
                  if paper else ")"))
  if not info["uses_depth_network"]:
    lines.append("  (this model does not use the face depth network)")
  step = info.get("train_step")
  if step:
    b = step["batch_per_device"]
    if "peak" in step:
      lines.append(
          f"one training step, {b} sample(s) on one {step['platform']} device: "
          f"peak {human_bytes(step['peak'])} (arguments "
          f"{human_bytes(step['argument'])}, temporaries {human_bytes(step['temp'])}); "
          f"per sample {human_bytes(step['peak_per_sample'])}")
    if "flops" in step:
      lines.append(f"  {step['flops'] / 1e9:.1f} GFLOP per step "
                   f"({step['flops'] / 1e9 / b:.1f} per sample); compiled in "
                   f"{step['compile_seconds']:.0f} s")
  return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
  import json  # pylint: disable=import-outside-toplevel

  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel

  bad = [a for a in args.extra_args if not a.startswith("--config.")]
  if bad:
    raise ConfigError(f"unrecognized arguments: {' '.join(bad)}")
  cfg = config_lib.load_config(args.config, args.extra_args)
  info = collect(cfg, memory=args.memory, batch_per_device=args.batch_per_device)
  print(format_info(info))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(info, f, indent=1, default=float)
  return 0
