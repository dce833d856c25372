"""``dagan-jax demo``: train, animate and evaluate on the sample that ships
with the project, with nothing downloaded.

  dagan-jax demo [--out demo_out] [--steps N] [--checkpoint DIR]

(``dagan-jax demo speak`` and ``dagan-jax demo dub`` are the speech-driven
demos: :mod:`dagan_jax.demo_speech`.)

Stages (each with progress shown):

1. **train** (skipped with ``--checkpoint``): ``configs/smoke.py`` (DaGAN at
   reduced widths, 64x64 frames) on ``data/sample`` for ``--steps`` steps in
   ``OUT/train``. The face depth network is random and frozen (the smoke
   config's fallback, announced loudly) unless ``--depth-steps N`` first
   trains ``configs/smoke.py:depth`` for N steps and loads it. The trainer
   measures the held-out reconstruction L1 (test clips, absolute motion)
   before and after training, next to copying the source frame.
2. **animate**: a frame of one test clip driven by another person's test
   clip (relative motion, relative Jacobians, adaptive movement scale: the
   official demo's recommended flags) -> ``OUT/animation.mp4`` and
   ``OUT/animation_side_by_side.mp4`` (source | driving + keypoints | driving
   depth | result).
3. **evaluate**: FOMM's reconstruction protocol on the test clips (L1, PSNR,
   SSIM, LPIPS-AlexNet).
4. ``OUT/summary.png`` (source, driving frames with keypoints, depth maps,
   results) and ``OUT/metrics.json`` (training figures, animation, evaluation,
   timings).

The sample (``data/sample``, see its LICENSE.md) and ``configs/smoke.py``
are found in the repository next to the package (a clone, or ``pip install
-e .``); ``--data`` and ``--config`` point elsewhere.
A few hundred steps of a small model on two training clips cannot make a
good talking head: the demo shows the whole pipeline working and the
numbers moving, not the paper's quality.
"""

from __future__ import annotations

import argparse
import pathlib

#: Default steps: about 3 minutes of training on 2 idle CPU cores.
DEFAULT_STEPS = 100
#: The sample's source and driving clips (test split, different persons).
SAMPLE_SOURCE = "test/id10008#lp_d9#000000#000064.mp4"
SAMPLE_DRIVING = "test/id10007#lp_d6#000000#000064.mp4"


def repo_root() -> pathlib.Path:
  """The folder holding the ``dagan_jax`` package (the repository in a clone
  or an editable install)."""
  return pathlib.Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--out", default="demo_out",
                      help="output folder (default ./demo_out); its train/ "
                           "subfolder is replaced by a new run")
  parser.add_argument("--checkpoint", default=None,
                      help="skip training: use this model directory (or a "
                           "training workdir, e.g. demo_out/train)")
  parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                      help=f"training steps (default {DEFAULT_STEPS}: a few "
                           "minutes on 2 CPU cores)")
  parser.add_argument("--depth-steps", type=int, default=0,
                      help="first train the face depth network for this many "
                           "steps (configs/smoke.py:depth) and use it; default "
                           "0: random frozen depth weights")
  parser.add_argument("--data", default=None,
                      help="dataset root with train/ and test/ (default: the "
                           "repository's data/sample)")
  parser.add_argument("--config", default=None,
                      help="talking-head config (default configs/smoke.py)")
  parser.add_argument("--source", default=None,
                      help=f"source image or clip (default DATA/{SAMPLE_SOURCE}, "
                           "frame 0)")
  parser.add_argument("--driving", default=None,
                      help=f"driving clip (default DATA/{SAMPLE_DRIVING})")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="frames per compiled call when animating and "
                           "evaluating (default 8)")
  parser.add_argument("--eval-frames", type=int, default=None,
                      help="evaluate on at most this many frames per test clip "
                           "(default: all)")
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bars")
  # The speech-driven demos, as sub-words; without one this is the DaGAN demo.
  from dagan_jax import demo_speech  # pylint: disable=import-outside-toplevel
  demo_speech.add_arguments(parser.add_subparsers(
      dest="demo_command", metavar="{speak,dub}",
      title="speech-driven demos (dagan-jax demo speak|dub --help)"))


def _find(path: str | None, default: pathlib.Path, what: str) -> pathlib.Path:
  from dagan_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  p = pathlib.Path(path).expanduser() if path else default
  if not p.exists():
    hint = ("" if path else " (the demo looks for it in the repository next to "
            "the package: run it from a clone / `pip install -e .`, or pass the "
            "path)")
    raise DataError(f"{what} not found: {p}{hint}")
  return p


def _label(image, text: str):
  """``image`` (H, W, 3) float with ``text`` on a dark strip at the top."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel
  img = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  draw.rectangle([0, 0, img.width, 11], fill=(0, 0, 0))
  draw.text((2, 0), text, fill=(255, 255, 255))
  return np.asarray(img, np.float32) / 255.0


def summary_image(source, driving, result, source_depth, *, columns: int = 5,
                  size: int = 128):
  """Rows: source | driving frames with keypoints; source depth | driving
  depth; source with keypoints | results (``columns`` evenly spaced frames),
  panels enlarged to ``size`` pixels."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel

  def up(img):
    img = visualize.to_rgb(img)
    return visualize.to_rgb(img, (size, size))

  t = len(driving)
  idx = np.unique(np.linspace(0, t - 1, min(columns, t)).round().astype(int))
  rows = [[_label(up(source), "source")],
          [_label(up(visualize.colorize(source_depth)), "source depth")],
          [_label(visualize.draw_keypoints(up(source), result.kp_source),
                  "source keypoints")]]
  for i in idx:
    rows[0].append(_label(visualize.draw_keypoints(up(driving[i]),
                                                   result.kp_driving[i]),
                          f"driving {i}"))
    depth = (result.driving_depth[i] if result.driving_depth is not None
             else np.zeros(driving[i].shape[:2]))
    rows[1].append(_label(up(visualize.colorize(depth)), f"depth {i}"))
    rows[2].append(_label(up(result.prediction[i]), f"result {i}"))
  return visualize.grid(rows, size=(size, size))


def _stage(n: int, total: int, text: str) -> None:
  import sys  # pylint: disable=import-outside-toplevel
  print(f"[{n}/{total}] {text}", file=sys.stderr, flush=True)


def train(config, workdir: pathlib.Path, *, steps: int, depth_steps: int,
          progress: bool) -> dict:
  """Trains (optionally the depth stage first) in ``workdir``; returns the
  figures for metrics.json."""
  import shutil  # pylint: disable=import-outside-toplevel

  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.training import talking_head  # pylint: disable=import-outside-toplevel

  if workdir.exists():
    shutil.rmtree(workdir)
  figures: dict = {}
  if depth_steps > 0:
    from dagan_jax.training import depth as depth_trainer  # pylint: disable=import-outside-toplevel
    dcfg = config_lib.load_config(f"{repo_root() / 'configs' / 'smoke.py'}:depth")
    dcfg.dataset_params.root_dir = str(config.dataset_params.root_dir)
    dcfg.train_params.checkpoint_every = int(depth_steps)
    dcfg.train_params.image_every = 0
    dsum = depth_trainer.train_and_evaluate(dcfg, workdir / "depth",
                                            max_steps=depth_steps,
                                            progress=progress)
    config.train_params.depth_checkpoint = str(dsum["model_dir"])
    figures["depth_stage"] = {"steps": dsum.get("step"),
                              "seconds": dsum.get("seconds"),
                              "metrics": dsum.get("metrics")}
  summary = talking_head.train_and_evaluate(config, workdir / "talking_head",
                                            max_steps=steps, progress=progress)
  figures.update({
      "steps": summary["step"], "seconds": summary["seconds"],
      "steps_per_second": summary["steps_per_second"],
      "final_losses": summary.get("metrics", {}),
      "held_out_reconstruction": {
          "protocol": "test clips, frame 0 as source, evenly spaced driving "
                      "frames, absolute keypoints (training/evaluation.py)",
          "before_training": summary.get("eval_initial"),
          "after_training": summary.get("eval")},
      "notes": summary.get("notes", []),
      "model_dir": summary["model_dir"]})
  return figures


def run(args: argparse.Namespace) -> int:
  if getattr(args, "demo_command", None):
    from dagan_jax import demo_speech  # pylint: disable=import-outside-toplevel
    return demo_speech.run(args)
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  from dagan_jax.errors import DaganError  # pylint: disable=import-outside-toplevel
  from dagan_jax.evaluation import cli_evaluate  # pylint: disable=import-outside-toplevel
  from dagan_jax.evaluation import evaluator as E  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import animate as A  # pylint: disable=import-outside-toplevel

  t_start = time.perf_counter()
  if args.steps < 1 and args.checkpoint is None:
    raise DaganError(f"--steps must be >= 1, got {args.steps}")
  progress = not args.no_progress
  data = _find(args.data, repo_root() / "data" / "sample", "sample data")
  source_path = _find(args.source, data / SAMPLE_SOURCE, "source")
  driving_path = _find(args.driving, data / SAMPLE_DRIVING, "driving clip")
  out = pathlib.Path(args.out).expanduser()
  out.mkdir(parents=True, exist_ok=True)
  total = 3 if args.checkpoint else 4
  stage = 0
  timing: dict[str, float] = {}
  metrics: dict = {"data": str(data)}

  if args.checkpoint is None:
    config_path = _find(args.config, repo_root() / "configs" / "smoke.py",
                        "config")
    config = config_lib.load_config(config_path)
    n = int(args.steps)
    config.dataset_params.root_dir = str(data)
    tp = config.train_params
    tp.max_steps, tp.checkpoint_every, tp.eval_every = n, n, n
    tp.image_every, tp.log_every = 0, max(1, min(10, n))
    stage += 1
    _stage(stage, total, f"training {config_path.name} on {data} for {n} steps "
           f"in {out / 'train'} (compiling the step takes a minute or two)")
    t0 = time.perf_counter()
    metrics["config"] = str(config_path)
    metrics["training"] = train(config, out / "train", steps=n,
                                depth_steps=args.depth_steps, progress=progress)
    timing["train_s"] = time.perf_counter() - t0
    checkpoint = metrics["training"]["model_dir"]
  else:
    checkpoint = args.checkpoint
    metrics["training"] = None
  metrics["checkpoint"] = str(checkpoint)

  stage += 1
  _stage(stage, total, f"animating {source_path.name} with {driving_path.name}")
  t0 = time.perf_counter()
  animator = A.Animator.from_checkpoint(checkpoint, batch_size=args.batch_size)
  hw = animator.frame_shape[:2]
  source = animator.fit(A.read_source(source_path), str(source_path))
  driving, fps = A.read_driving(driving_path, hw)
  fps = fps or 25.0
  bar = tqdm(total=len(driving), unit="frame", desc="animate",
             disable=not progress, file=sys.stderr)
  result = animator.animate(source, driving, relative=True, adapt_scale=True,
                            keep_depth=True, progress=bar.update)
  bar.close()
  timing["animate_s"] = time.perf_counter() - t0
  # Steady-state speed: the same batches again, compiled.
  t1 = time.perf_counter()
  animator.drive(driving, relative=True, adapt_scale=True)
  fps_run = len(driving) / (time.perf_counter() - t1)
  anim_path = A.write_frames(out / "animation.mp4", result.prediction, fps)
  sbs_path = A.write_frames(out / "animation_side_by_side.mp4",
                            A.side_by_side(source, driving, result), fps)
  metrics["animation"] = {
      "source": str(source_path), "driving": str(driving_path),
      "frames": len(driving), "fps": fps, "frame_size": list(hw),
      "motion": "relative (relative Jacobians) + adaptive movement scale",
      "movement_scale": float(result.scale[0]),
      "frames_per_second_compiled": fps_run,
      "seconds_including_compilation": timing["animate_s"]}

  stage += 1
  _stage(stage, total, f"evaluating reconstruction on {data / 'test'}")
  t0 = time.perf_counter()
  ebar = tqdm(unit="video", desc="evaluate", disable=not progress, file=sys.stderr)
  report = cli_evaluate.evaluate(
      animator, "reconstruction", str(data),
      metrics=("l1", "psnr", "ssim", "lpips_alex"),
      max_frames=args.eval_frames, progress=lambda name: ebar.update(1))
  ebar.close()
  timing["evaluate_s"] = time.perf_counter() - t0
  metrics["evaluation"] = report

  stage += 1
  _stage(stage, total, "writing the summary")
  src_depth = animator.source["depth"]
  src_depth = (np.asarray(src_depth)[0] if src_depth is not None
               else np.zeros(hw, np.float32))
  summary_path = out / "summary.png"
  visualize.save_png(summary_path, summary_image(source, driving, result, src_depth))
  timing["total_s"] = time.perf_counter() - t_start
  metrics["timing"] = timing
  metrics_path = out / "metrics.json"
  E.write_report(metrics_path, metrics)

  print(format_summary(metrics, anim_path, sbs_path, summary_path, metrics_path))
  return 0


def format_summary(metrics: dict, anim_path, sbs_path, summary_path,
                   metrics_path) -> str:
  """The closing printout: key numbers and where every file is."""
  lines = ["", "dagan-jax demo finished in "
           f"{metrics['timing']['total_s'] / 60:.1f} min"]
  tr = metrics.get("training")
  if tr and tr.get("depth_stage"):
    ds = tr["depth_stage"]
    lines.append(f"  face depth network: trained {ds['steps']} steps in "
                 f"{ds['seconds']:.0f} s, then frozen")
  if tr:
    held = tr["held_out_reconstruction"]
    before, after = held.get("before_training") or {}, held.get("after_training") or {}
    lines.append(f"  trained {tr['steps']} steps in {tr['seconds']:.0f} s "
                 f"({tr['steps_per_second']:.2f} steps/s)")
    if before and after:
      lines.append(
          f"  held-out reconstruction L1: {before['reconstruction_l1']:.4f} "
          f"untrained -> {after['reconstruction_l1']:.4f} trained "
          f"(copying the source frame: {after['copy_source_l1']:.4f})")
  an = metrics["animation"]
  lines.append(f"  animation: {an['frames']} frames at {an['frame_size'][0]}x"
               f"{an['frame_size'][1]}, {an['frames_per_second_compiled']:.1f} "
               "frames/s once compiled")
  ev = metrics["evaluation"]
  lines.append("  reconstruction on the test clips: " + ", ".join(
      f"{m} {ev['mean'][m]:.4f}" for m in ev["metrics"]))
  lines += [f"  video:        {anim_path}",
            f"  side by side: {sbs_path}",
            f"  summary:      {summary_path}",
            f"  metrics:      {metrics_path}"]
  if tr:
    lines.append(f"  model:        {tr['model_dir']}  (rerun with --checkpoint "
                 "to skip training)")
  return "\n".join(lines)
