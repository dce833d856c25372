"""``dagan-jax speak``: a face image and speech -> a talking-head video.

  dagan-jax speak --checkpoint MODEL --source face.png --audio speech.wav
      --out result.mp4 [--pose predicted|still|VIDEO] [--relative]
      [--batch-size N] [--side-by-side]

MODEL is a model directory with Audio2Head's speech networks (``dagan-jax
convert --audio2head``, or the model/ of a speech-network training run). The
speech is any audio or video file; the video is 25 fps, one frame per 40 ms
of speech, at the renderer's frame size (256 x 256 for the released model),
with the speech muxed in (``.mp4``); ``.npy`` or a folder of PNG frames get
the frames only. See :mod:`dagan_jax.inference.speak`.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", required=True,
                      help="model directory with audio2pose / audio2kp and a "
                           "generator (dagan-jax convert --audio2head)")
  parser.add_argument("--source", required=True,
                      help="the face: an image (any size, resized to 256x256 "
                           "for the speech networks and to the renderer's frame "
                           "size), or a video whose --source-frame is used")
  parser.add_argument("--source-frame", type=int, default=0)
  parser.add_argument("--audio", required=True,
                      help="speech: .wav/.flac/.mp3/.m4a or a video's sound")
  parser.add_argument("--out", required=True,
                      help=".mp4 (with the speech), .npy, or a PNG folder")
  parser.add_argument("--pose", default="predicted",
                      help="'predicted' (from the speech, default), 'still' "
                           "(the image's own pose held), or a video whose "
                           "head poses to follow")
  parser.add_argument("--relative", action="store_true",
                      help="motion relative to the first frame added to the "
                           "source's keypoints (default: absolute, as the "
                           "official code)")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="frames per compiled generator call")
  parser.add_argument("--side-by-side", action="store_true",
                      help="also write OUT_side_by_side: source | pose box | result")
  parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from dagan_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import animate as A  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import speak as S  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel

  samples = audio_io.read_speech(args.audio, min_seconds=0.04)
  source = A.resize_frames(A.read_source(args.source, args.source_frame)[None],
                           (256, 256), where=args.source)[0]
  pose: str | np.ndarray = args.pose
  if args.pose not in ("predicted", "still"):
    if not os.path.exists(args.pose):
      raise DataError(f"--pose {args.pose}: not 'predicted' or 'still', and no "
                      "such video")
    pose = S.poses_from_video(args.pose)
  speaker = S.Speaker.from_checkpoint(args.checkpoint, batch_size=args.batch_size)
  seconds = len(samples) / audio_io.SAMPLE_RATE
  print(f"speaking {seconds:.2f} s of {args.audio} with {args.source} "
        f"(pose {args.pose if isinstance(pose, str) else 'from ' + args.pose}, "
        f"{'relative' if args.relative else 'absolute'} keypoints, pitch "
        f"{speaker.pitch_tracker})", file=sys.stderr)
  bars: dict[str, tqdm] = {}

  def progress(what: str, n: int, total: int) -> None:
    if what not in bars:
      bars[what] = tqdm(total=total, unit=what[:-1], desc=what,
                        disable=args.no_progress, file=sys.stderr)
    bars[what].update(n)

  t0 = time.perf_counter()
  result = speaker.speak(source, samples, pose=pose, relative=args.relative,
                         where=args.audio, progress=progress)
  for bar in bars.values():
    bar.close()
  took = time.perf_counter() - t0
  out = str(args.out)
  if out.lower().endswith((".mp4", ".mov", ".mkv")):
    media.write_video(out, result.frames, result.fps, audio=samples)
  else:
    A.notice(out, "not a video file: frames only, without the speech")
    A.write_frames(out, result.frames, result.fps)
  n, h, w = result.frames.shape[:3]
  print(f"wrote {out} ({n} frames, {w}x{h}, {result.fps:g} fps, "
        f"{n / result.fps:.2f} s); {n / took:.2f} frames/s including compilation")
  if args.side_by_side:
    sbs = S.side_by_side(source, result)
    path = A.side_by_side_path(out)
    if str(path).lower().endswith((".mp4", ".mov", ".mkv")):
      media.write_video(path, sbs, result.fps, audio=samples)
    else:
      A.write_frames(path, sbs, result.fps)
    print(f"wrote {path} (source | pose box | result)")
  return 0
