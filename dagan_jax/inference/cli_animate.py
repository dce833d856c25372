"""``dagan-jax animate``: animate a source face with a driving video.

  dagan-jax animate --checkpoint DIR --source IMAGE --driving VIDEO --out OUT
      [--relative | --absolute] [--adapt-scale | --no-adapt-scale]
      [--find-best-frame | --best-frame N] [--batch-size N] [--side-by-side]

OUT by extension: ``.mp4`` (H.264 at the driving video's frame rate),
``.npy`` (float32 frames, exact), or a folder (no extension) of lossless PNG
frames. See :mod:`dagan_jax.inference.animate` for the motion-transfer
conventions.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", required=True,
                      help="model directory (dagan-jax convert / train), or a "
                           "training workdir holding model/")
  parser.add_argument("--config", default=None,
                      help="config file to build the networks from instead of "
                           "the one stored with the checkpoint")
  parser.add_argument("--source", required=True,
                      help="source image (any size; greyscale/RGBA converted), "
                           "or a video whose --source-frame is used")
  parser.add_argument("--source-frame", type=int, default=0,
                      help="frame of --source when it is a video (default 0)")
  parser.add_argument("--driving", required=True,
                      help="driving video (.mp4/.mov/.avi/.mkv/.webm/.gif), a "
                           "folder of frames or a .npy (T, H, W, 3)")
  parser.add_argument("--out", required=True,
                      help="result: .mp4 (driving fps), .npy (float32, exact) "
                           "or a folder of lossless PNG frames (no extension)")
  motion = parser.add_mutually_exclusive_group()
  motion.add_argument("--relative", dest="relative", action="store_true",
                      default=True,
                      help="relative motion and Jacobians w.r.t. the initial "
                           "driving frame, as the official demo's --relative "
                           "(default)")
  motion.add_argument("--absolute", dest="relative", action="store_false",
                      help="absolute driving keypoints (reconstruction-style)")
  parser.add_argument("--adapt-scale", action=argparse.BooleanOptionalAction,
                      default=True,
                      help="scale relative motion by sqrt(hull area) of the "
                           "source vs the initial driving keypoints (default on)")
  best = parser.add_mutually_exclusive_group()
  best.add_argument("--find-best-frame", action="store_true",
                    help="start relative motion from the driving frame whose "
                         "keypoints are closest to the source's (centred, "
                         "divided by sqrt of their convex-hull area). The "
                         "official demo uses face-alignment landmarks; this "
                         "uses the model's own keypoints")
  best.add_argument("--best-frame", type=int, default=None,
                    help="start relative motion from this driving frame")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="driving frames per compiled call (default 8)")
  parser.add_argument("--side-by-side", action="store_true",
                      help="also write OUT_side_by_side: source | driving with "
                           "keypoints | driving depth | result")
  parser.add_argument("--fps", type=float, default=None,
                      help="frame rate of an .mp4 OUT (default: the driving "
                           "video's, or 25 when it has none)")
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bar")


def run(args: argparse.Namespace) -> int:
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from dagan_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import animate as A  # pylint: disable=import-outside-toplevel

  if args.batch_size < 1:
    raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
  animator = A.Animator.from_checkpoint(args.checkpoint, args.config,
                                        batch_size=args.batch_size)
  hw = animator.frame_shape[:2]
  source = animator.fit(A.read_source(args.source, args.source_frame), args.source)
  driving, fps = A.read_driving(args.driving, hw)
  if fps is None and args.fps is None and str(args.out).lower().endswith(
      (".mp4", ".mov", ".mkv", ".gif")):
    A.notice(args.driving, "no frame rate (frame folder or array): writing 25 fps")
  fps = args.fps or fps or 25.0
  if args.best_frame is not None and not 0 <= args.best_frame < len(driving):
    raise DataError(f"best frame {args.best_frame} is outside the driving video "
                    f"{args.driving} (frames 0..{len(driving) - 1})")
  mode = ("relative" + (" + adapt scale" if args.adapt_scale else "")
          if args.relative else "absolute")
  print(f"animating {args.source} with {len(driving)} frames of {args.driving} "
        f"at {hw[0]}x{hw[1]} ({mode} motion)", file=sys.stderr)
  bar = tqdm(total=len(driving), unit="frame", desc="animate",
             disable=args.no_progress, file=sys.stderr)
  t0 = time.perf_counter()
  result = animator.animate(source, driving, relative=args.relative,
                            adapt_scale=args.adapt_scale,
                            find_best_frame=args.find_best_frame,
                            best_frame=args.best_frame,
                            keep_depth=args.side_by_side, progress=bar.update)
  seconds = time.perf_counter() - t0
  bar.close()
  if result.best_frame is not None:
    print(f"initial driving frame: {result.best_frame}", file=sys.stderr)
  out = A.write_frames(args.out, result.prediction, fps)
  print(f"wrote {out} ({len(result.prediction)} frames, {fps:g} fps); "
        f"{len(driving) / seconds:.1f} frames/s including compilation")
  if args.side_by_side:
    sbs = A.side_by_side_path(args.out)
    A.write_frames(sbs, A.side_by_side(source, driving, result), fps)
    print(f"wrote {sbs} (source | driving + keypoints | depth | result)")
  return 0
