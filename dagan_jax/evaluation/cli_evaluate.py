"""``dagan-jax evaluate``: score a checkpoint on a test set.

  dagan-jax evaluate --checkpoint DIR --data ROOT
      --protocol reconstruction|pairs|cross-id|speech|dubbing [--pairs CSV] [--out report.json]
      [--metrics l1,psnr,...] [--landmark-model SPEC] [--identity-model SPEC]
      [--chunk-size N] [--batch-size N] [--num-videos N] [--max-frames N]
      [--syncnet syncnet_v2.model] [--fid-inception pt_inception.pth]

Protocols (:mod:`dagan_jax.evaluation.evaluator` says what is compared with
what):

* ``reconstruction`` (FOMM / DaGAN ``reconstruction.py``): every clip of
  ``ROOT/<split>``; frame 0 is the source, every frame drives with its
  **absolute** keypoints and is the ground truth.
* ``speech``: a speech-driven model (``dagan-jax convert --audio2head`` or
  trained) on the clips with sound of ``ROOT/<split>``: keypoints against
  the detector, reconstruction with real head poses, head-motion statistics
  and weight-free lip sync (:mod:`dagan_jax.evaluation.speech`); LSE-C/D
  with ``--syncnet`` (:mod:`dagan_jax.evaluation.syncnet`).
* ``dubbing``: an IP_LAP model (``dagan-jax convert --ip-lap-landmark``) on
  the clips with sound of ``ROOT/<split>``, each dubbed with its own speech
  onto itself (IP_LAP's reconstruction setting): PSNR / SSIM / LPIPS of the
  whole frame and of the lower half of the face crop, mouth-landmark
  distance and weight-free lip sync (:mod:`dagan_jax.evaluation.dubbing`);
  LSE-C/D with ``--syncnet``, FID with ``--fid-inception``.
* ``pairs`` / ``cross-id``: the rows of a DaGAN pair list (``--pairs``; this
  project ships ``data/vox_mini_test_pairs.csv`` and
  ``data/vox_mini_test_cross_id_pairs.csv`` for ``vox_mini``). Motion
  (``--motion auto``): a row whose driving side is one frame uses absolute
  keypoints (relative motion against that same frame would be no motion); a
  row with a whole driving video uses relative motion and Jacobians from its
  first frame, as the official ``run.py --mode animate`` (its
  ``animate_params.normalization_params``: relative, no movement-scale
  adaptation unless ``--adapt-scale``).

Frames are read with :mod:`dagan_jax.input.media` (greyscale/RGBA converted
with a notice) and resized to the model's ``frame_shape`` as the training
pipeline does (area when shrinking, bicubic when enlarging); metrics are
computed at that size.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterator, Sequence

PROTOCOLS = ("reconstruction", "pairs", "cross-id", "speech", "dubbing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", required=True,
                      help="model directory, or a training workdir holding model/")
  parser.add_argument("--config", default=None,
                      help="config file to build the networks from instead of "
                           "the one stored with the checkpoint")
  parser.add_argument("--data", required=True,
                      help="dataset root with train/ and test/ (VoxCeleb layout "
                           "as FOMM's preprocessing writes it)")
  parser.add_argument("--protocol", choices=PROTOCOLS, default="reconstruction",
                      help="reconstruction (default), pairs (same identity, "
                           "ground truth = driving), cross-id (no ground truth), "
                           "speech (Audio2Head) or dubbing (IP_LAP)")
  parser.add_argument("--pairs", default=None,
                      help="pair list in DaGAN's CSV format (needed for pairs / "
                           "cross-id), e.g. data/vox_mini_test_pairs.csv")
  parser.add_argument("--split", default="test",
                      help="split folder of the reconstruction protocol, and of "
                           "pair-list paths that name none (default test)")
  parser.add_argument("--layout", default="vox", choices=("vox", "hdtf"),
                      help="dataset layout for reconstruction (default vox)")
  parser.add_argument("--out", default=None,
                      help="write the report (per-video and mean metrics) as JSON")
  parser.add_argument("--metrics", default=None,
                      help="comma-separated metrics (default: all of the "
                           "protocol's): l1, psnr, ssim, ssim_skimage, "
                           "lpips_alex, lpips_vgg, akd, aed, csim, tcm")
  parser.add_argument("--landmark-model", default=None,
                      help="landmark network for AKD: 'module:factory[@weights]', "
                           "a weight file, or 'mesh' (not FAN-68; see "
                           "dagan_jax.evaluation.face_models)")
  parser.add_argument("--identity-model", default=None,
                      help="identity network for AED / CSIM: 'module:factory"
                           "[@weights]' or a weight file")
  parser.add_argument("--chunk-size", type=int, default=16,
                      help="driving frames generated and scored at a time "
                           "(bounds memory; default 16)")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="frames per compiled generator call (default 8)")
  parser.add_argument("--num-videos", type=int, default=None,
                      help="reconstruction, speech, dubbing: at most this many "
                           "clips (sorted by name)")
  parser.add_argument("--max-frames", type=int, default=None,
                      help="reconstruction, speech, dubbing: at most this many "
                           "frames per clip (from the start)")
  parser.add_argument("--motion", choices=("auto", "relative", "absolute"),
                      default="auto",
                      help="pairs / cross-id motion (see the command's notes); "
                           "reconstruction always uses absolute keypoints")
  parser.add_argument("--adapt-scale", action=argparse.BooleanOptionalAction,
                      default=False,
                      help="relative motion: scale by the keypoint hulls' size "
                           "ratio (default off, as the official animate mode)")
  parser.add_argument("--syncnet", default=None, metavar="PATH",
                      help="SyncNet's weights (syncnet_v2.model of "
                           "joonson/syncnet_python; needs torch to read): the "
                           "speech and dubbing protocols then report LSE-C / LSE-D")
  parser.add_argument("--fid-inception", default=None, metavar="PATH",
                      help="pytorch-fid's Inception weights "
                           "(pt_inception-2015-12-05-6726825d.pth; needs torch "
                           "to read): the dubbing protocol then reports FID")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------
# Library pieces (the demo uses them too).


def frame_reader(frame_hw: tuple[int, int]) -> Callable[[str, Sequence[int] | None],
                                                        Iterator[Any]]:
  """``read_frames(path, indices or None)`` for the evaluator: float32 RGB
  frames ``(H, W, 3)`` streamed from any clip and resized to ``frame_hw``."""
  from dagan_jax.inference.animate import resize_frames  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel

  def read(path: str, indices: Sequence[int] | None) -> Iterator[Any]:
    for _, f in media.iter_native_frames(path, indices):
      yield resize_frames(media.to_float_rgb(f, path)[None], frame_hw, path)[0]

  return read


def reconstruction_clips(root: str, split: str, frame_hw: tuple[int, int], *,
                         layout: str = "vox", num_videos: int | None = None,
                         max_frames: int | None = None):
  """``(name, frames callable)`` of the clips of ``root/split`` (sorted),
  frames resized to ``frame_hw`` and decoded only when scored."""
  import itertools  # pylint: disable=import-outside-toplevel

  from dagan_jax.inference.animate import resize_frames  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import pipeline  # pylint: disable=import-outside-toplevel

  for name, clip in pipeline.reconstruction_videos(root, split, layout=layout,
                                                   limit=num_videos):
    def frames(clip=clip):
      it = iter(clip)
      if max_frames is not None:
        it = itertools.islice(it, max_frames)
      for f in it:
        yield resize_frames(f[None], frame_hw, clip.path)[0]
    yield name, frames


class CheckpointGenerator:
  """The evaluator's ``generate_fn`` and ``start_video`` backed by an
  :class:`~dagan_jax.inference.animate.Animator`.

  ``modes`` (an iterator of ``'relative'`` / ``'absolute'``, one per video
  in evaluation order) or ``motion`` (the same for every video) picks the
  motion; relative motion is taken from the first frame of each video.
  """

  def __init__(self, animator, *, motion: str = "absolute",
               modes: Iterator[str] | None = None, adapt_scale: bool = False):
    self.animator = animator
    self.motion = motion
    self.modes = modes
    self.adapt_scale = adapt_scale
    self.source = None
    self.kp_initial = None
    self.relative = False
    self.frames = 0

  def start_video(self, source, first_chunk) -> None:
    mode = next(self.modes) if self.modes is not None else self.motion
    self.relative = mode == "relative"
    self.source = self.animator.prepare_source(source)
    self.kp_initial = (self.animator.keypoints(first_chunk[:1])
                       if self.relative else None)

  def __call__(self, source, driving):
    del source  # prepared in start_video
    self.frames += len(driving)
    return self.animator.drive(driving, source=self.source, relative=self.relative,
                               adapt_scale=self.adapt_scale,
                               kp_driving_initial=self.kp_initial).prediction


def evaluate(animator, protocol: str, data: str, *, pairs: str | None = None,
             split: str = "test", layout: str = "vox",
             metrics: Sequence[str] | None = None, landmark_model=None,
             identity_model=None, chunk_size: int = 16,
             num_videos: int | None = None, max_frames: int | None = None,
             motion: str = "auto", adapt_scale: bool = False,
             progress: Callable[[str], None] | None = None) -> dict:
  """Runs ``protocol`` with ``animator``; returns the evaluator's report with
  a ``settings`` entry (protocol, motion, frame size, data)."""
  import os  # pylint: disable=import-outside-toplevel

  from dagan_jax.errors import DataError, DaganError  # pylint: disable=import-outside-toplevel
  from dagan_jax.evaluation import evaluator as E  # pylint: disable=import-outside-toplevel
  from dagan_jax.evaluation import pairs as pairs_lib  # pylint: disable=import-outside-toplevel

  if protocol not in PROTOCOLS:
    raise DaganError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS}")
  if chunk_size < 1:
    raise DaganError(f"--chunk-size must be >= 1, got {chunk_size}")
  if not os.path.isdir(data):
    raise DataError(f"dataset root {data} is not a folder")
  hw = animator.frame_shape[:2]
  common = dict(metrics=metrics, landmark_model=landmark_model,
                identity_model=identity_model, chunk_size=chunk_size,
                progress=progress)
  settings: dict[str, Any] = {"protocol": protocol, "data": str(data),
                              "frame_size": list(hw)}
  if protocol == "reconstruction":
    gen = CheckpointGenerator(animator, motion="absolute")
    settings["motion"] = "absolute"
    report = E.evaluate_reconstruction(
        gen, reconstruction_clips(data, split, hw, layout=layout,
                                  num_videos=num_videos, max_frames=max_frames),
        start_video=gen.start_video, **common)
  else:
    if not pairs:
      raise DaganError(f"--protocol {protocol} needs --pairs CSV (DaGAN's pair "
                       "list format), e.g. data/vox_mini_test_pairs.csv")
    rows = pairs_lib.read_pair_list(pairs)
    if motion == "auto":
      modes = ["absolute" if r.driving.frame is not None else "relative" for r in rows]
    else:
      modes = [motion] * len(rows)
    gen = CheckpointGenerator(animator, modes=iter(modes), adapt_scale=adapt_scale)
    settings.update({"pairs": str(pairs), "motion": motion,
                     "motion_per_row": sorted(set(modes)),
                     "adapt_scale": adapt_scale})
    report = E.evaluate_pairs(gen, rows, frame_reader(hw), data,
                              cross_identity=protocol == "cross-id",
                              start_video=gen.start_video, **common)
  report["settings"] = settings
  report["generated_frames"] = gen.frames
  return report


def format_report(report: dict) -> str:
  """The mean metrics as a table, then what was skipped and why."""
  lines = [f"protocol {report['protocol']}: {len(report['per_video'])} "
           f"{'videos' if report['protocol'] == 'reconstruction' else 'rows'}, "
           f"{report.get('generated_frames', '?')} generated frames"]
  if report["metrics"]:
    lines.append(f"  {'metric':<14}{'mean':>12}{'frame mean':>12}{'videos':>8}")
    for m in report["metrics"]:
      lines.append(f"  {m:<14}{report['mean'][m]:>12.4f}"
                   f"{report['frame_mean'][m]:>12.4f}{report['num_videos'][m]:>8d}")
  else:
    lines.append("  no metric was computed")
  if report["skipped"]:
    lines.append("skipped:")
    for m, why in report["skipped"].items():
      lines.append(f"  {m}: {why}")
  return "\n".join(lines)


def _run_speech(args: argparse.Namespace) -> int:
  import sys  # pylint: disable=import-outside-toplevel

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from dagan_jax.evaluation import evaluator as E  # pylint: disable=import-outside-toplevel
  from dagan_jax.evaluation import speech  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference.speak import Speaker  # pylint: disable=import-outside-toplevel
  syncnet = None
  if args.syncnet:
    from dagan_jax.evaluation import syncnet as syncnet_lib  # pylint: disable=import-outside-toplevel
    syncnet = syncnet_lib.load(args.syncnet)
  speaker = Speaker.from_checkpoint(args.checkpoint, batch_size=args.batch_size)
  bar = tqdm(unit="video", desc="evaluate speech", disable=args.no_progress,
             file=sys.stderr)
  report = speech.evaluate_speech(speaker, args.data, split=args.split,
                                  num_videos=args.num_videos,
                                  max_frames=args.max_frames,
                                  progress=lambda name: bar.update(1),
                                  syncnet=syncnet)
  bar.close()
  report["settings"]["checkpoint"] = str(args.checkpoint)
  lines = [f"protocol speech: {len(report['per_video'])} videos, "
           f"{report['generated_frames']} frames"]
  lines += [f"  {k:<22}{v:>12.4f}" for k, v in report["mean"].items()]
  if report["skipped"]:
    lines += ["skipped:"] + [f"  {k}: {v}" for k, v in report["skipped"].items()]
  print("\n".join(lines))
  if args.out:
    E.write_report(args.out, report)
    print(f"report written to {args.out}")
  return 0


def _run_dubbing(args: argparse.Namespace) -> int:
  import sys  # pylint: disable=import-outside-toplevel

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from dagan_jax.evaluation import dubbing  # pylint: disable=import-outside-toplevel
  from dagan_jax.evaluation import evaluator as E  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference.dub import Dubber  # pylint: disable=import-outside-toplevel
  # Weight files first: a wrong path fails before any dubbing.
  syncnet = fid_model = None
  if args.syncnet:
    from dagan_jax.evaluation import syncnet as syncnet_lib  # pylint: disable=import-outside-toplevel
    syncnet = syncnet_lib.load(args.syncnet)
  if args.fid_inception:
    from dagan_jax.evaluation import fid  # pylint: disable=import-outside-toplevel
    fid_model = fid.load(args.fid_inception)
  dubber = Dubber.from_checkpoint(args.checkpoint, batch_size=args.batch_size)
  bar = tqdm(unit="video", desc="evaluate dubbing", disable=args.no_progress,
             file=sys.stderr)
  report = dubbing.evaluate_dubbing(dubber, args.data, split=args.split,
                                    num_videos=args.num_videos,
                                    max_frames=args.max_frames,
                                    progress=lambda name: bar.update(1),
                                    syncnet=syncnet, fid_model=fid_model)
  bar.close()
  report["settings"]["checkpoint"] = str(args.checkpoint)
  print(dubbing.format_report(report))
  if args.out:
    E.write_report(args.out, report)
    print(f"report written to {args.out}")
  return 0


def run(args: argparse.Namespace) -> int:
  import sys  # pylint: disable=import-outside-toplevel

  if args.protocol == "speech":
    return _run_speech(args)
  if args.protocol == "dubbing":
    return _run_dubbing(args)

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from dagan_jax.evaluation import evaluator as E  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference.animate import Animator  # pylint: disable=import-outside-toplevel

  metrics = None
  if args.metrics:
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
  animator = Animator.from_checkpoint(args.checkpoint, args.config,
                                      batch_size=args.batch_size)
  bar = tqdm(unit="video" if args.protocol == "reconstruction" else "pair",
             desc=f"evaluate {args.protocol}",
             disable=args.no_progress, file=sys.stderr)
  report = evaluate(animator, args.protocol, args.data, pairs=args.pairs,
                    split=args.split, layout=args.layout, metrics=metrics,
                    landmark_model=args.landmark_model,
                    identity_model=args.identity_model,
                    chunk_size=args.chunk_size, num_videos=args.num_videos,
                    max_frames=args.max_frames, motion=args.motion,
                    adapt_scale=args.adapt_scale,
                    progress=lambda name: bar.update(1))
  bar.close()
  report["settings"]["checkpoint"] = str(args.checkpoint)
  print(format_report(report))
  if args.out:
    E.write_report(args.out, report)
    print(f"report written to {args.out}")
  return 0
