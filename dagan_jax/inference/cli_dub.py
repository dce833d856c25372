"""``dagan-jax dub``: a template video and speech -> the video saying it (IP_LAP).

  dagan-jax dub --checkpoint MODEL --video template.mp4 --audio speech.wav
      --out result.mp4 [--side-by-side] [--batch-size N] [--no-progress]

MODEL is a model directory with IP_LAP's networks (``dagan-jax convert
--ip-lap-landmark L.pth --ip-lap-renderer R.pth``). The template is a video
at any fps (resampled to 25), a frame folder, or a still image (a one-frame
template); it is played forward and backward when shorter than the speech.
The result has one frame per 40 ms mel chunk of the speech at the
template's resolution, with the speech muxed in (``.mp4``); ``.npy`` or a
folder of PNG frames get the frames only. See
:mod:`dagan_jax.inference.dub`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", required=True,
                      help="model directory with ip_lap_landmark and "
                           "ip_lap_renderer (dagan-jax convert --ip-lap-landmark "
                           "L.pth --ip-lap-renderer R.pth)")
  parser.add_argument("--video", required=True,
                      help="the template: a video (any fps), a frame folder, or "
                           "a still image of a face")
  parser.add_argument("--audio", required=True,
                      help="speech: .wav/.flac/.mp3/.m4a or a video's sound")
  parser.add_argument("--out", required=True,
                      help=".mp4 (with the speech), .npy, or a PNG folder")
  parser.add_argument("--side-by-side", action="store_true",
                      help="also write OUT_side_by_side: template | sketch | result")
  parser.add_argument("--batch-size", type=int, default=2,
                      help="frames per compiled renderer call (the last call is "
                           "padded; on a CPU larger batches are no faster, "
                           "on a GPU try 8-16)")
  parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  from dagan_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import animate as A  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import dub as D  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel

  bars: dict[str, tqdm] = {}
  units = {"mesh": "frame", "landmarks": "window", "rendering": "face"}
  rendered_at: list[tuple[float, int]] = []   # (time, faces) after each call

  def progress(what: str, n: int, total: int) -> None:
    if what not in bars:
      close_bars()   # one stage at a time: mesh, landmarks, rendering
      bars[what] = tqdm(total=total, unit=units.get(what, "it"), desc=what,
                        disable=args.no_progress, file=sys.stderr)
    bars[what].update(n)
    if what == "rendering":
      rendered_at.append((time.perf_counter(), n))

  def close_bars() -> None:
    for bar in bars.values():
      bar.close()
    bars.clear()

  t0 = time.perf_counter()
  # The cheap checks first (the model's config, the speech, the template's
  # faces), then the networks.
  model = checkpoints.resolve_model_dir(args.checkpoint)
  config = checkpoints.read_config(model)
  if config.get("ip_lap_params") is None:
    raise ConfigError(f"{args.checkpoint}: not an IP_LAP model (its config has no "
                      "ip_lap_params; make one with `dagan-jax convert "
                      "--ip-lap-landmark L.pth --ip-lap-renderer R.pth`)")
  params = config.ip_lap_params
  samples = audio_io.read_speech(args.audio)
  chunks = D.speech_chunks(samples, fps=params.fps, mel_step=params.mel_step,
                           where=args.audio)
  frames, src_fps, n_src = D.read_template_frames(args.video, params.fps)
  template = D.make_template(
      frames, where=str(args.video), source_fps=src_fps, source_frames=n_src,
      progress=lambda n: progress("mesh", n, len(frames)))
  close_bars()
  dubber = D.Dubber.from_checkpoint(model, batch_size=args.batch_size)
  rate = (f"{src_fps:g} fps, resampled to {dubber.fps:g}" if src_fps and
          abs(src_fps - dubber.fps) > 1e-6 else f"{dubber.fps:g} fps")
  h, w = template.frame_hw
  print(f"dubbing {len(samples) / audio_io.SAMPLE_RATE:.2f} s of {args.audio} "
        f"onto {args.video} ({len(template)} frames, {w}x{h}, {rate}); "
        f"{len(chunks)} output frames", file=sys.stderr)
  if len(template.interpolated):
    print(f"  no face found in {len(template.interpolated)} template frame(s) "
          f"{_spans(template.interpolated)}: filled in from their neighbours",
          file=sys.stderr)
  t1 = time.perf_counter()
  result = dubber.dub(template, samples, where=args.audio, progress=progress)
  close_bars()
  took = time.perf_counter() - t1
  out = str(args.out)
  frames = result.frames
  if out.lower().endswith((".mp4", ".mov", ".mkv")):
    media.write_video(out, frames, result.fps, audio=samples)
  else:
    A.notice(out, "not a video file: frames only, without the speech")
    A.write_frames(out, frames, result.fps)
  n = len(frames)
  rendered = result.plan.num_windows
  speed = ""
  if len(rendered_at) > 1:   # after the first call, which compiles
    faces = sum(k for _, k in rendered_at[1:])
    speed = (f", {(rendered_at[-1][0] - rendered_at[0][0]) / faces:.2f} s per "
             "face after the first call")
  print(f"wrote {out} ({n} frames, {w}x{h}, {result.fps:g} fps, "
        f"{n / result.fps:.2f} s); {rendered} face{'s' if rendered != 1 else ''} "
        f"rendered in {took:.1f} s "
        f"(landmarks, compilation and paste-back included{speed}; "
        f"{time.perf_counter() - t0:.1f} s in all)")
  if result.interpolated_frames:
    print(f"  {result.interpolated_frames} output frame(s) show a template "
          "frame whose face was interpolated")
  if args.side_by_side:
    sbs = D.side_by_side(template, result)
    path = A.side_by_side_path(out)
    if str(path).lower().endswith((".mp4", ".mov", ".mkv")):
      media.write_video(path, sbs, result.fps, audio=samples)
    else:
      A.write_frames(path, sbs, result.fps)
    print(f"wrote {path} (template | sketch | result)")
  return 0


def _spans(indices) -> str:
  """'3-5, 9' for [3, 4, 5, 9] (at most six spans)."""
  spans, start, prev = [], None, None
  for i in list(indices) + [None]:
    if start is not None and (i is None or i != prev + 1):
      spans.append(f"{start}" if start == prev else f"{start}-{prev}")
      start = None
    if i is not None and start is None:
      start = i
    prev = i
  more = ", ..." if len(spans) > 6 else ""
  return ", ".join(spans[:6]) + more
