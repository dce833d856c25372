"""``dagan-jax train``: train from a config file (talking head, depth stage,
Audio2Head's speech networks, or IP_LAP's two stages).

  dagan-jax train --config configs/X.py --workdir DIR [--config.a.b=V ...]

The config's ``trainer`` key picks the trainer (``talking_head`` for DaGAN /
DaGAN++, ``depth`` for the face depth network, ``audio2kp`` / ``audio2pose``
for Audio2Head's speech networks over a trained renderer,
``ip_lap_landmark`` / ``ip_lap_renderer`` for IP_LAP's landmark generator and
renderer). A workdir that already has
checkpoints is resumed from its latest one. Overrides use dotted paths into
the config (``--config.train_params.batch_size=8``); an unknown key is an
error. Multi-host: run one process per host with ``--coordinator``,
``--num-processes`` and ``--process-id`` (or let ``jax.distributed`` detect
the cluster on TPU pods).
"""

from __future__ import annotations

import argparse

ACCEPTS_EXTRA_ARGS = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True,
                      help="config file: configs/*.py (get_config) or an "
                           "official YAML; 'file.py:ARG' passes ARG to get_config")
  parser.add_argument("--workdir", required=True,
                      help="run directory: checkpoints, TensorBoard events, "
                           "metrics.jsonl, and the exported model/ directory")
  parser.add_argument("--max-steps", type=int, default=None,
                      help="stop after this many steps in total (overrides "
                           "the epoch count; resumed runs count from 0)")
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bar (log lines only)")
  parser.add_argument("--coordinator", default=None,
                      help="multi-host: address:port of process 0")
  parser.add_argument("--num-processes", type=int, default=None)
  parser.add_argument("--process-id", type=int, default=None)
  parser.epilog = ("Config overrides: --config.SECTION.KEY=VALUE (any number), "
                   "e.g. --config.train_params.batch_size=8")


def run(args: argparse.Namespace) -> int:
  import logging  # pylint: disable=import-outside-toplevel

  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel

  bad = [a for a in args.extra_args if not a.startswith("--config.")]
  if bad:
    raise ConfigError(f"unrecognized arguments: {' '.join(bad)} (config "
                      "overrides look like --config.train_params.batch_size=8)")
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(levelname)s %(name)s: %(message)s")
  # orbax and grain log every checkpoint step at INFO through absl.
  logging.getLogger("absl").setLevel(logging.WARNING)
  from dagan_jax.training import parallel  # pylint: disable=import-outside-toplevel
  parallel.initialize_distributed(args.coordinator, args.num_processes,
                                  args.process_id)
  import jax  # pylint: disable=import-outside-toplevel
  if jax.default_backend() == "cpu":
    from dagan_jax import allocator  # pylint: disable=import-outside-toplevel
    logging.getLogger(__name__).info("%s", allocator.status_line())
  cfg = config_lib.load_config(args.config, args.extra_args)
  if cfg.trainer == "depth":
    from dagan_jax.training import depth as trainer  # pylint: disable=import-outside-toplevel
  elif cfg.trainer == "audio2kp":
    from dagan_jax.training import audio2kp as trainer  # pylint: disable=import-outside-toplevel
  elif cfg.trainer == "audio2pose":
    from dagan_jax.training import audio2pose as trainer  # pylint: disable=import-outside-toplevel
  elif cfg.trainer == "ip_lap_landmark":
    from dagan_jax.training import ip_lap_landmark as trainer  # pylint: disable=import-outside-toplevel
  elif cfg.trainer == "ip_lap_renderer":
    from dagan_jax.training import ip_lap_renderer as trainer  # pylint: disable=import-outside-toplevel
  else:
    from dagan_jax.training import talking_head as trainer  # pylint: disable=import-outside-toplevel
  summary = trainer.train_and_evaluate(cfg, args.workdir, max_steps=args.max_steps,
                                       progress=not args.no_progress)
  print(f"finished at step {summary['step']}; model directory: "
        f"{summary['model_dir']}")
  return 0
