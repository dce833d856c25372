"""The ``dagan-jax`` command line: one entry point with subcommands.

Each subcommand lives in its own module that exposes ``add_arguments(parser)``
and ``run(args) -> int``.  Modules are imported only when their command is
chosen (or its ``--help`` is asked for), so ``dagan-jax --help`` starts fast and
a command never pays for the imports of another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from dagan_jax import __version__
from dagan_jax.errors import DaganError

# name -> (module, one-line help).  The module is imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("dagan_jax.demo", "Train briefly on the bundled sample, animate a face, evaluate (no downloads)."),
    "convert": ("dagan_jax.convert.cli_convert", "Convert official PyTorch checkpoints (DaGAN, Audio2Head, IP_LAP) to a model directory."),
    "data": ("dagan_jax.input.cli_data", "Validate a dataset before a long run (data check)."),
    "train": ("dagan_jax.training.cli_train", "Train DaGAN / DaGAN++ or the face depth network from a config file."),
    "info": ("dagan_jax.cli_info", "Parameter counts of a config's networks; with --memory, the compiled cost of one training step."),
    "animate": ("dagan_jax.inference.cli_animate", "Animate a source face with a driving video (mp4, PNG frames or .npy)."),
    "speak": ("dagan_jax.inference.cli_speak", "Animate a face image with speech (Audio2Head): image + audio -> video with sound."),
    "dub": ("dagan_jax.inference.cli_dub", "Dub a template video with new speech (IP_LAP): video + audio -> the video saying it."),
    "evaluate": ("dagan_jax.evaluation.cli_evaluate", "Evaluate a checkpoint: reconstruction, same-identity or cross-identity pairs."),
}

def _command_module(name: str):
  return importlib.import_module(COMMANDS[name][0])


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="dagan-jax",
      description=(
          "DaGAN / DaGAN++ talking-head generation in JAX: convert official "
          "checkpoints, train, animate a face, evaluate."),
  )
  parser.add_argument("--version", action="version",
                      version=f"dagan-jax {__version__}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (_, help_text) in COMMANDS.items():
    p = sub.add_parser(name, help=help_text, description=help_text)
    if name == selected:
      _command_module(name).add_arguments(p)
  return parser


def _selected_command(argv: Sequence[str]) -> str | None:
  for token in argv:
    if token in COMMANDS:
      return token
    if not token.startswith("-"):
      return None
  return None


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  selected = _selected_command(argv)
  parser = build_parser(selected)
  args, unknown = parser.parse_known_args(argv)
  if args.command is None:
    parser.print_help()
    return 0
  module = _command_module(args.command)
  if unknown and not getattr(module, "ACCEPTS_EXTRA_ARGS", False):
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  args.extra_args = unknown
  try:
    return int(module.run(args) or 0)
  except DaganError as e:
    print(f"dagan-jax {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f"dagan-jax {args.command}: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
