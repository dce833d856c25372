"""``dagan-jax data``: dataset tools.

``dagan-jax data check --root ROOT --layout vox|hdtf|lrs2
[--split train|val|test|pretrain|all] [--sheet OUT.png] [--num-sample-frames N]
[--frame-shape H W] [--resize-frames] [--cache-dir DIR] [--audio]``
    ``--split all`` (the default) checks the layout's splits: train and test,
    for ``lrs2`` train, val and test (the filelists of ``ROOT/filelists``).
    Reads every clip's header and frame count, decodes a sample of frames,
    prints clips / persons / frames per split and every bad file with what is
    wrong; exit status 1 if anything is bad (0 otherwise; 2 if ROOT is
    missing). ``--sheet`` writes a contact sheet of augmented training pairs.
    The run refreshes the clip-index cache that training reads.

``dagan-jax data prepare --root ROOT --layout vox|hdtf|lrs2 --out DIR
[--split S|all] [--pitch auto|harvest|yin] [--model MODEL_DIR] [--batch N]``
    Computes once per clip what speech-driven training reads beside the
    frames (speech features, face mesh, crop box, head poses, a model's
    keypoints): :mod:`dagan_jax.input.prepare`. Resumable; exit status 1 if
    a clip could not be prepared.

``dagan-jax data build-tfds --root ROOT --layout vox|hdtf --data-dir DIR
[--config png|jpeg] [--skip-bad] [--frame-shape H W]``
    Writes the TFDS ArrayRecord dataset ``dagan_<layout>_frames`` (no
    builder exists for ``lrs2``).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
  c = sub.add_parser("check", help="validate a dataset before a long run",
                     description="Validate a dataset before a long run.")
  c.add_argument("--root", required=True,
                 help="dataset folder holding train/ and test/ (lrs2: main/ "
                      "and filelists/)")
  # The layouts of clips.LAYOUTS, spelled out as this module imports the
  # package's input code only when a command runs (see _check).
  c.add_argument("--layout", choices=("vox", "hdtf", "lrs2"), default="vox")
  c.add_argument("--split", choices=("train", "val", "test", "pretrain", "all"),
                 default="all",
                 help="all: the layout's splits (train and test; lrs2: train, "
                      "val and test)")
  c.add_argument("--sheet", metavar="OUT.png",
                 help="write a contact sheet of augmented training pairs")
  c.add_argument("--sheet-pairs", type=int, default=8, metavar="N")
  c.add_argument("--num-sample-frames", type=int, default=3, metavar="N",
                 help="frames decoded per clip: first, last, evenly between")
  c.add_argument("--frame-shape", type=int, nargs=2, metavar=("H", "W"),
                 help="required frame size (default: 256 256 vox, 512 512 "
                      "hdtf, 160 160 lrs2)")
  c.add_argument("--resize-frames", action="store_true",
                 help="frames of another size are resized, not bad")
  c.add_argument("--min-frames", type=int, default=2,
                 help="frames a clip needs (2 pairs, 3 depth triplets)")
  c.add_argument("--cache-dir", help="clip-index cache folder")
  c.add_argument("--threads", type=int, default=4)
  c.add_argument("--audio", action="store_true",
                 help="also check each clip's sound (its sidecar .wav or its "
                      "video's audio): present, decodable, as long as the "
                      "video to within one frame")
  c.add_argument("--seed", type=int, default=0)

  b = sub.add_parser("build-tfds", help="write the TFDS ArrayRecord dataset",
                     description="Write the TFDS ArrayRecord dataset.")
  b.add_argument("--root", required=True)
  b.add_argument("--layout", choices=("vox", "hdtf"), default="vox")
  b.add_argument("--data-dir", required=True, help="TFDS data_dir to write into")
  b.add_argument("--config", choices=("png", "jpeg"), default="png")
  b.add_argument("--skip-bad", action="store_true")
  b.add_argument("--frame-shape", type=int, nargs=2, metavar=("H", "W"))
  b.add_argument("--cache-dir")


  p = sub.add_parser(
      "prepare", help="compute speech features, face mesh, crops, poses (and a "
      "model's keypoints) once per clip",
      description="Compute what speech-driven training reads beside the frames, "
                  "once per clip (dagan_jax.input.prepare); resumable.")
  p.add_argument("--root", required=True, help="dataset folder")
  p.add_argument("--layout", choices=("vox", "hdtf", "lrs2"), default="vox")
  p.add_argument("--out", required=True, help="folder to write the prepared files into")
  p.add_argument("--split", default="all",
                 help="a split, or 'all' for the layout's splits")
  p.add_argument("--pitch", choices=("auto", "harvest", "yin"), default="auto",
                 help="pitch tracker of Audio2Head's features (auto: Harvest "
                      "when pyworld is installed)")
  p.add_argument("--model", metavar="DIR",
                 help="a DaGAN / DaGAN++ model directory: also store its "
                      "keypoints and Jacobians on every frame's crop")
  p.add_argument("--batch", type=int, default=16, help="frames per face-mesh batch")
  p.add_argument("--cache-dir", help="clip-index cache folder")
  p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
  cmd = getattr(args, "data_command", None)
  if cmd == "check":
    return _check(args)
  if cmd == "build-tfds":
    return _build(args)
  if cmd == "prepare":
    return _prepare(args)
  print("dagan-jax data: choose a subcommand: check, build-tfds, prepare")
  return 2


def _check(args: argparse.Namespace) -> int:
  from dagan_jax.input import check  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import clips as clips_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import pipeline  # pylint: disable=import-outside-toplevel
  splits = (clips_lib.DEFAULT_SPLITS[args.layout] if args.split == "all"
            else (args.split,))
  shape = (tuple(args.frame_shape) + (3,) if args.frame_shape
           else clips_lib.DEFAULT_FRAME_SHAPE[args.layout])
  report = check.check_dataset(
      args.root, args.layout, splits=splits, frame_shape=shape,
      resize=args.resize_frames, num_sample_frames=args.num_sample_frames,
      min_frames=args.min_frames, cache_dir=args.cache_dir,
      threads=args.threads, audio=args.audio)
  print(report.format())
  if args.sheet:
    sheet_split = "train" if "train" in splits else splits[0]
    params = pipeline.dataset_params_for(
        args.root, args.layout, frame_shape=list(shape),
        resize_frames=args.resize_frames, cache_dir=args.cache_dir)
    try:
      check.contact_sheet(args.sheet, params, split=sheet_split,
                          num_pairs=args.sheet_pairs, seed=args.seed)
      print(f"contact sheet of {args.sheet_pairs} {sheet_split} pairs: {args.sheet}")
    except Exception as e:  # pylint: disable=broad-except
      from dagan_jax.errors import DaganError  # pylint: disable=import-outside-toplevel
      if not isinstance(e, DaganError):
        raise
      print(f"no contact sheet: {e}")
  return 0 if report.ok else 1


def _build(args: argparse.Namespace) -> int:
  from dagan_jax.input import tfds_builders  # pylint: disable=import-outside-toplevel
  shape = tuple(args.frame_shape) + (3,) if args.frame_shape else None
  path = tfds_builders.build_tfds(args.root, args.layout, args.data_dir,
                                  config=args.config, skip_bad=args.skip_bad,
                                  frame_shape=shape, cache_dir=args.cache_dir)
  print(f"built {path}")
  return 0


def _prepare(args: argparse.Namespace) -> int:
  from dagan_jax.input import prepare  # pylint: disable=import-outside-toplevel
  report = prepare.prepare_dataset(
      args.root, args.out, layout=args.layout,
      splits=None if args.split == "all" else (args.split,),
      pitch_tracker=args.pitch, model_dir=args.model, batch=args.batch,
      cache_dir=args.cache_dir, progress=not args.no_progress)
  print(report.format())
  return 0 if report.ok else 1
