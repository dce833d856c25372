"""``dagan-jax demo speak`` and ``dagan-jax demo dub``: the speech-driven
systems trained briefly on the speech sample that ships with the project,
then used on held-out clips, with nothing downloaded.

  dagan-jax demo speak [--out demo_speak] [--steps N] [--renderer DIR] ...
  dagan-jax demo dub   [--out demo_dub] [--landmark-steps N] ...

**speak** (Audio2Head over a small DaGAN), stages in ``OUT``:

1. ``renderer/``: ``configs/smoke.py`` (DaGAN at 64x64) on the sample's
   train clips for ``--steps`` steps (skipped with ``--renderer DIR``);
2. ``audio2pose/``: ``configs/audio2head_smoke.py:audio2pose`` over that
   renderer; it prepares the train clips (speech features, face mesh, head
   poses, the renderer's keypoints) into ``audio2pose/prepared``;
3. ``audio2kp/``: ``configs/audio2head_smoke.py:audio2kp`` on that prepared
   folder, with the first stage's network, so that ``audio2kp/model`` holds
   everything ``dagan-jax speak`` loads;
4. a test clip's face says another test clip's speech:
   ``speak.mp4`` (the renderer's 64x64 frames, speech muxed in),
   ``speak_side_by_side.mp4`` (source | pose box | result), ``summary.png``,
   ``metrics.json``.

**dub** (IP_LAP), stages in ``OUT``:

1. ``prepared/``: the train clips' face mesh and mel (``data prepare``),
   read by both training stages;
2. ``landmark/``: ``configs/ip_lap_smoke.py:landmark``;
3. ``renderer/``: ``configs/ip_lap_smoke.py:renderer`` with the landmark
   run's network, so that ``renderer/model`` is what ``dagan-jax dub``
   loads;
4. a test clip cut to ``--seconds`` is dubbed with the loudest ``--seconds``
   of another test clip's speech: ``dub.mp4``, ``dub_side_by_side.mp4``
   (template | sketch | result), ``summary.png``, ``metrics.json``.

Each training stage is what ``dagan-jax train`` runs for the command
:meth:`Stage.command` prints (the plan is printed first); a stage's folder
is replaced by a new run. ``metrics.json`` holds the losses logged at the
first and the last step of every stage (and where a term starts later, as
the IP_LAP renderer's full losses after its warp-only phase, its first
logged step), the timings and the frame counts.
Minutes of CPU training check the plumbing end to end; they do not make
believable head motion or mouths.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import shlex

#: The sample's held-out clips (test split): the face (and dub template)
#: is a person the models never saw, the speech another test clip's.
FACE = "test/st_feifeili#clip3.mp4"
SPEECH = "test/grid_s1#bbal6n.mp4"
#: Default steps, about 10 minutes per demo on 2 CPU cores in all (README).
RENDERER_STEPS = 100
POSE_STEPS = 100
KP_STEPS = 40
LANDMARK_STEPS = 100
IP_LAP_RENDERER_STEPS = 16
DUB_SECONDS = 1.6
#: Loss terms the closing printout shows first (all are in metrics.json).
SHOWN_TERMS = ("generator_total", "perceptual", "pose", "motion_std", "kp_value",
               "kp_jacobian", "l1", "velocity", "perceptual_gen", "style",
               "perceptual_warp")
#: Trainer modules (dagan_jax.training.<trainer>) a demo stage may run.
TRAINERS = ("talking_head", "audio2pose", "audio2kp", "ip_lap_landmark",
            "ip_lap_renderer")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One step of a demo's plan. Training stages have a ``config``
  (``file.py:ARG``), dotted ``overrides`` and ``steps``; the others
  (``prepare``, ``speak``, ``dub``) only a ``title``."""
  name: str
  title: str
  workdir: pathlib.Path | None = None
  config: str | None = None
  overrides: tuple[str, ...] = ()
  steps: int = 0

  def command(self) -> str:
    """The ``dagan-jax train`` command line that runs the same training."""
    if self.config is None:
      return ""
    words = ["dagan-jax", "train", "--config", self.config, "--workdir",
             str(self.workdir), "--max-steps", str(self.steps)]
    words += [f"--config.{o}" for o in self.overrides]
    return " ".join(shlex.quote(w) for w in words)


def repo_root() -> pathlib.Path:
  """The folder holding the ``dagan_jax`` package (a clone, or an editable
  install)."""
  return pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------- arguments


def _common(parser: argparse.ArgumentParser, out: str) -> None:
  parser.add_argument("--out", default=out,
                      help=f"output folder (default ./{out}); its stage "
                           "folders are replaced by new runs")
  parser.add_argument("--data", default=None,
                      help="dataset root with train/ and test/ clips with "
                           "speech (default: the repository's data/speech_sample)")
  parser.add_argument("--audio", default=None,
                      help=f"the speech (default DATA/{SPEECH}): any audio "
                           "or video file")
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bars")


def add_speak_arguments(parser: argparse.ArgumentParser) -> None:
  _common(parser, "demo_speak")
  parser.add_argument("--steps", type=int, default=RENDERER_STEPS,
                      help=f"renderer training steps (default {RENDERER_STEPS})")
  parser.add_argument("--renderer", default=None,
                      help="skip the renderer stage: use this DaGAN model "
                           "directory or training workdir (e.g. "
                           "demo_speak/renderer)")
  parser.add_argument("--pose-steps", type=int, default=POSE_STEPS,
                      help=f"audio2pose steps (default {POSE_STEPS})")
  parser.add_argument("--kp-steps", type=int, default=KP_STEPS,
                      help=f"audio2kp steps (default {KP_STEPS}; about 2 s "
                           "each on 2 CPU cores)")
  parser.add_argument("--source", default=None,
                      help=f"the face: an image or a video's --source-frame "
                           f"(default DATA/{FACE})")
  parser.add_argument("--source-frame", type=int, default=0)
  parser.add_argument("--seconds", type=float, default=None,
                      help="speak at most this much of the speech (default: "
                           "all of it)")
  parser.add_argument("--batch-size", type=int, default=8,
                      help="frames per compiled renderer call")


def add_dub_arguments(parser: argparse.ArgumentParser) -> None:
  _common(parser, "demo_dub")
  parser.add_argument("--landmark-steps", type=int, default=LANDMARK_STEPS,
                      help=f"landmark generator steps (default {LANDMARK_STEPS})")
  parser.add_argument("--renderer-steps", type=int, default=IP_LAP_RENDERER_STEPS,
                      help=f"renderer steps (default {IP_LAP_RENDERER_STEPS}; "
                           "4-7 s each on 2 CPU cores)")
  parser.add_argument("--template", default=None,
                      help=f"the template video (default DATA/{FACE})")
  parser.add_argument("--seconds", type=float, default=DUB_SECONDS,
                      help=f"dub this much speech onto as much template "
                           f"(default {DUB_SECONDS}; about 5 s per frame of 40 "
                           "ms on 2 CPU cores)")
  parser.add_argument("--batch-size", type=int, default=2,
                      help="faces per compiled renderer call")


def add_arguments(sub) -> None:
  """Adds ``speak`` and ``dub`` to the ``demo`` command's sub-parsers."""
  for name, add, text in (
      ("speak", add_speak_arguments,
       "Audio2Head over a small DaGAN: train all three briefly on the speech "
       "sample, then make a held-out face say held-out speech."),
      ("dub", add_dub_arguments,
       "IP_LAP: train both stages briefly on the speech sample, then dub a "
       "held-out clip with another clip's speech.")):
    add(sub.add_parser(name, help=text, description=text))


# --------------------------------------------------------------- plans


def _find(path: str | None, default: pathlib.Path, what: str) -> pathlib.Path:
  from dagan_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  p = pathlib.Path(path).expanduser() if path else default
  if not p.exists():
    hint = ("" if path else " (the demo looks for it in the repository next to "
            "the package: run it from a clone / `pip install -e .`, or pass the "
            "path)")
    raise DataError(f"{what} not found: {p}{hint}")
  return p


def _steps(value: int, flag: str) -> int:
  from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  if value < 1:
    raise ConfigError(f"{flag} must be >= 1, got {value}")
  return int(value)


def _num_kp(renderer: pathlib.Path | None, config_ref: str) -> int:
  """Keypoints of the renderer (a model directory or workdir), or of the
  config that will train it: audio2kp must predict as many."""
  from dagan_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  cfg = (checkpoints.read_config(checkpoints.resolve_model_dir(renderer))
         if renderer is not None else config_lib.load_config(config_ref))
  return int(cfg["model_params"]["common_params"]["num_kp"])


def speak_plan(args: argparse.Namespace) -> list[Stage]:
  """The stages of ``demo speak`` for parsed ``args`` (module docstring)."""
  from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  if args.seconds is not None and not args.seconds > 0:
    raise ConfigError(f"--seconds must be > 0, got {args.seconds}")
  configs = repo_root() / "configs"
  data = _find(args.data, repo_root() / "data" / "speech_sample", "speech sample")
  out = pathlib.Path(args.out).expanduser().absolute()
  plan = []
  if args.renderer:
    renderer = _find(args.renderer, pathlib.Path(), "--renderer")
    renderer_model = renderer
  else:
    renderer = None
    n = _steps(args.steps, "--steps")
    plan.append(Stage(
        "renderer", f"training the renderer (configs/smoke.py, DaGAN 64x64) for "
        f"{n} steps", out / "renderer", f"{configs / 'smoke.py'}",
        (f"dataset_params.root_dir={data}", f"train_params.checkpoint_every={n}",
         f"train_params.eval_every={n}", "train_params.image_every=0",
         f"train_params.log_every={max(1, min(10, n))}"), n))
    renderer_model = out / "renderer" / "model"
  num_kp = _num_kp(renderer, f"{configs / 'smoke.py'}")
  smoke = configs / "audio2head_smoke.py"
  pose_dir, kp_dir = out / "audio2pose", out / "audio2kp"
  common = (f"dataset_params.root_dir={data}",
            f"audio2head_params.audio2kp.num_kp={num_kp}",
            "train_params.image_every=0")
  n = _steps(args.pose_steps, "--pose-steps")
  plan.append(Stage(
      "audio2pose", f"preparing the train clips with the renderer's keypoints, "
      f"then training audio2pose for {n} steps", pose_dir, f"{smoke}:audio2pose",
      common + (f"train_params.renderer={renderer_model}",
                f"train_params.checkpoint_every={n}"), n))
  n = _steps(args.kp_steps, "--kp-steps")
  plan.append(Stage(
      "audio2kp", f"training audio2kp for {n} steps on the prepared clips",
      kp_dir, f"{smoke}:audio2kp",
      common + (f"train_params.prepared_dir={pose_dir / 'prepared'}",
                f"train_params.speech_model={pose_dir}",
                f"train_params.checkpoint_every={n}"), n))
  source = _find(args.source, data / FACE, "source")
  audio = _find(args.audio, data / SPEECH, "speech")
  plan.append(Stage("speak", f"speaking {audio.name} with {source.name}",
                    kp_dir / "model"))
  return plan


def dub_plan(args: argparse.Namespace) -> list[Stage]:
  """The stages of ``demo dub`` for parsed ``args`` (module docstring)."""
  from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
  configs = repo_root() / "configs"
  data = _find(args.data, repo_root() / "data" / "speech_sample", "speech sample")
  out = pathlib.Path(args.out).expanduser().absolute()
  if not args.seconds > 0:
    raise ConfigError(f"--seconds must be > 0, got {args.seconds}")
  prepared = out / "prepared"
  smoke = configs / "ip_lap_smoke.py"
  common = (f"dataset_params.root_dir={data}",
            f"train_params.prepared_dir={prepared}", "train_params.image_every=0")
  n_lm = _steps(args.landmark_steps, "--landmark-steps")
  n_r = _steps(args.renderer_steps, "--renderer-steps")
  template = _find(args.template, data / FACE, "template")
  audio = _find(args.audio, data / SPEECH, "speech")
  return [
      Stage("prepare", f"preparing {data / 'train'} (face mesh and mel)", prepared),
      Stage("landmark", f"training the landmark generator for {n_lm} steps",
            out / "landmark", f"{smoke}:landmark",
            common + (f"train_params.checkpoint_every={n_lm}",), n_lm),
      Stage("renderer", f"training the renderer for {n_r} steps (compiling its "
            "two phases takes a minute or two)", out / "renderer",
            f"{smoke}:renderer",
            common + (f"train_params.landmark_model={out / 'landmark'}",
                      f"train_params.checkpoint_every={n_r}"), n_r),
      Stage("dub", f"dubbing {args.seconds:g} s of {template.name} with "
            f"{audio.name}'s speech", out / "renderer" / "model"),
  ]


# --------------------------------------------------------------- stages


def _announce(i: int, plan: list[Stage]) -> None:
  import sys  # pylint: disable=import-outside-toplevel
  print(f"[{i + 1}/{len(plan)}] {plan[i].title}", file=sys.stderr, flush=True)


def losses_at_ends(workdir: pathlib.Path) -> tuple[dict, dict, dict]:
  """``(first, last, since)`` of a run's logged training values
  (``metrics.jsonl``, without its bookkeeping): the records of its first and
  last logged steps, and for each term of the last one the earliest logged
  ``[step, value]`` of that term in the last one's ``phase`` (IP_LAP's
  renderer logs its full losses only after the warp-only phase): the fair
  "from" of a "from -> to"."""
  from dagan_jax.training.monitor import read_metrics  # pylint: disable=import-outside-toplevel
  rows = [r for r in read_metrics(workdir) if r.get("split") == "train"]
  if not rows:
    return {}, {}, {}
  skip = {"split", "time", "skipped_clips", "steps_per_second"}
  keep = lambda r: {k: v for k, v in r.items() if k not in skip}  # noqa: E731
  first, last = keep(rows[0]), keep(rows[-1])
  same = [r for r in rows if r.get("phase") == last.get("phase")]
  since = {}
  for term in last:
    if term in ("step", "phase"):
      continue
    row = next((r for r in same if isinstance(r.get(term), (int, float))), None)
    if row is not None:
      since[term] = [row["step"], row[term]]
  return first, last, since


def train_stage(stage: Stage, *, progress: bool) -> dict:
  """Runs a training stage in a fresh ``stage.workdir``; its figures for
  metrics.json."""
  import importlib  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel

  cfg = config_lib.load_config(stage.config, stage.overrides)
  if cfg.trainer not in TRAINERS:
    raise ConfigError(f"{stage.config}: trainer {cfg.trainer!r} is not one of "
                      f"the demo's {TRAINERS}")
  trainer = importlib.import_module(f"dagan_jax.training.{cfg.trainer}")
  if stage.workdir.exists():
    shutil.rmtree(stage.workdir)
  t0 = time.perf_counter()
  summary = trainer.train_and_evaluate(cfg, stage.workdir, max_steps=stage.steps,
                                       progress=progress)
  first, last, since = losses_at_ends(stage.workdir)
  figures = {"command": stage.command(), "steps": summary["step"],
             "seconds_training": summary["seconds"],
             "seconds_in_all": time.perf_counter() - t0,
             "steps_per_second": summary["steps_per_second"],
             "first_step": first, "last_step": last, "first_logged": since,
             "model_dir": summary["model_dir"],
             "notes": [str(n) for n in summary.get("notes", [])]}
  if "eval" in summary:
    figures["held_out_reconstruction"] = {
        "before_training": summary.get("eval_initial"),
        "after_training": summary.get("eval")}
  return figures


def _bars(progress: bool):
  """``(update(what, n, total), close())`` over one tqdm bar per stage."""
  import sys  # pylint: disable=import-outside-toplevel

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bars: dict = {}

  def update(what: str, n: int, total: int) -> None:
    if what not in bars:
      close()
      bars[what] = tqdm(total=total, desc=what, disable=not progress,
                        file=sys.stderr)
    bars[what].update(n)

  def close() -> None:
    for bar in bars.values():
      bar.close()
    bars.clear()

  return update, close


def loudest_window(samples, seconds: float, rate: int = 16000) -> int:
  """The start (in samples, a multiple of 40 ms) of the ``seconds`` of
  ``samples`` with the most energy: the demo dubs speech, not the silence
  around it."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  hop = rate // 25
  n = max(1, int(round(seconds * 25)))
  x = np.asarray(samples, np.float64)[: len(samples) // hop * hop]
  energy = (x.reshape(-1, hop) ** 2).sum(1)
  if len(energy) <= n:
    return 0
  sums = np.convolve(energy, np.ones(n), "valid")
  return int(np.argmax(sums)) * hop


def _panel(image, text: str, size: int = 128):
  """``image`` (float in [0, 1]) enlarged (nearest) to ``size`` x ``size``,
  ``text`` on a dark strip along its top."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image, ImageDraw  # pylint: disable=import-outside-toplevel

  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  big = visualize.to_rgb(image, (size, size))
  img = Image.fromarray((np.clip(big, 0, 1) * 255 + 0.5).astype(np.uint8))
  draw = ImageDraw.Draw(img)
  draw.rectangle([0, 0, size, 11], fill=(0, 0, 0))
  draw.text((2, 0), text, fill=(255, 255, 255))
  return np.asarray(img, np.float32) / 255.0


def _columns(t: int, columns: int = 5):
  import numpy as np  # pylint: disable=import-outside-toplevel
  return np.unique(np.linspace(0, t - 1, min(columns, t)).round().astype(int))


def speak_summary(source, render_view, speech, *, size: int = 128):
  """Rows: the 256x256 source | pose boxes; the renderer's view of the
  source | frames with their keypoints (evenly spaced frames)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  h = render_view.shape[0]
  rows = [[_panel(source, "source", size)],
          [_panel(render_view, f"source {h}x{h}", size)]]
  for i in _columns(len(speech.frames)):
    rows[0].append(_panel(np.repeat(speech.boxes[i][..., None] / 255.0, 3, -1),
                          f"pose {i}", size))
    big = visualize.to_rgb(speech.frames[i], (size, size))
    rows[1].append(_panel(visualize.draw_keypoints(big, speech.kp_value[i]),
                          f"frame {i}", size))
  return visualize.grid(rows, size=(size, size))


def dub_summary(template, dub, *, size: int = 128):
  """Rows: template frame | sketch of the predicted landmarks | generated
  face | result (evenly spaced output frames)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  plan = dub.plan
  rows: list[list] = [[], [], [], []]
  for c in _columns(len(plan.output_window)):
    b = plan.output_window[c]
    f = plan.frame_index[b, plan.centre]
    rows[0].append(_panel(template.frames[f] / 255.0, f"template {f}", size))
    # Sketches are drawn in BGR, as the renderer reads them.
    rows[1].append(_panel(np.asarray(dub.sketches[b], np.float32)[..., ::-1],
                          f"sketch {c}", size))
    rows[2].append(_panel(np.asarray(dub.faces[b], np.float32), f"face {c}", size))
    rows[3].append(_panel(dub.composites[b] / 255.0, f"result {c}", size))
  return visualize.grid(rows, size=(size, size))


def _speak(stage: Stage, args, data: pathlib.Path, out: pathlib.Path,
           progress: bool) -> dict:
  """The last stage of ``demo speak``: writes the videos and the summary."""
  import time  # pylint: disable=import-outside-toplevel

  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import animate as A  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import speak as S  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  source_path = _find(args.source, data / FACE, "source")
  audio_path = _find(args.audio, data / SPEECH, "speech")
  samples = audio_io.read_speech(audio_path, min_seconds=0.04)
  if args.seconds:
    samples = samples[:int(args.seconds * audio_io.SAMPLE_RATE)]
  source = A.resize_frames(A.read_source(source_path, args.source_frame)[None],
                           (S.A2H_SIZE, S.A2H_SIZE), where=str(source_path))[0]
  speaker = S.Speaker.from_checkpoint(stage.workdir, batch_size=args.batch_size)
  update, close = _bars(progress)
  result = speaker.speak(source, samples, where=str(audio_path), progress=update)
  close()
  took = time.perf_counter() - t0
  files = {"video": out / "speak.mp4", "side_by_side": out / "speak_side_by_side.mp4",
           "summary": out / "summary.png"}
  media.write_video(files["video"], result.frames, result.fps, audio=samples)
  media.write_video(files["side_by_side"], S.side_by_side(source, result),
                    result.fps, audio=samples)
  view = S.source_views(source, speaker.frame_hw).render
  visualize.save_png(files["summary"], speak_summary(source, view, result))
  n, h, w = result.frames.shape[:3]
  return {"source": f"{source_path} (frame {args.source_frame})",
          "speech": str(audio_path), "speech_seconds": len(samples) / audio_io.SAMPLE_RATE,
          "frames": n, "fps": result.fps, "frame_size": [h, w],
          "pitch_tracker": result.pitch_tracker, "poses": "predicted from the speech",
          "keypoints": "absolute, as Audio2Head",
          "seconds_including_compilation": took,
          "files": {k: str(v) for k, v in files.items()}}


def _dub(stage: Stage, args, data: pathlib.Path, out: pathlib.Path,
         progress: bool) -> dict:
  """The last stage of ``demo dub``: writes the videos and the summary."""
  import time  # pylint: disable=import-outside-toplevel

  from dagan_jax import visualize  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference import dub as D  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  template_path = _find(args.template, data / FACE, "template")
  audio_path = _find(args.audio, data / SPEECH, "speech")
  dubber = D.Dubber.from_checkpoint(stage.workdir, batch_size=args.batch_size)
  speech = audio_io.read_speech(audio_path)
  start = loudest_window(speech, args.seconds)
  samples = speech[start:start + int(round(args.seconds * audio_io.SAMPLE_RATE))]
  frames, src_fps, _ = D.read_template_frames(template_path, dubber.fps)
  keep = min(len(frames), max(1, int(round(args.seconds * dubber.fps))))
  update, close = _bars(progress)
  template = dubber.template_from_frames(
      frames[:keep], where=str(template_path), source_fps=src_fps,
      source_frames=keep, progress=lambda k: update("mesh", k, keep))
  result = dubber.dub(template, samples, where=str(audio_path), progress=update)
  close()
  took = time.perf_counter() - t0
  files = {"video": out / "dub.mp4", "side_by_side": out / "dub_side_by_side.mp4",
           "summary": out / "summary.png"}
  media.write_video(files["video"], result.frames, result.fps, audio=samples)
  media.write_video(files["side_by_side"], D.side_by_side(template, result),
                    result.fps, audio=samples)
  visualize.save_png(files["summary"], dub_summary(template, result))
  n, h, w = result.frames.shape[:3]
  return {"template": f"{template_path} (first {keep} frames at {dubber.fps:g} fps)",
          "speech": f"{audio_path} from {start / audio_io.SAMPLE_RATE:.2f} s "
                    "(its loudest stretch)",
          "speech_seconds": len(samples) / audio_io.SAMPLE_RATE,
          "frames": n, "fps": result.fps, "frame_size": [h, w],
          "faces_rendered": int(result.plan.num_windows),
          "interpolated_frames": int(result.interpolated_frames),
          "seconds_including_compilation": took,
          "seconds_per_frame": took / max(n, 1),
          "files": {k: str(v) for k, v in files.items()}}


def _prepare(stage: Stage, data: pathlib.Path, progress: bool) -> dict:
  import shutil  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  from dagan_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import prepare  # pylint: disable=import-outside-toplevel
  if stage.workdir.exists():
    shutil.rmtree(stage.workdir)
  t0 = time.perf_counter()
  # Pitch by YIN: IP_LAP reads the mel only, and YIN needs no extra package.
  report = prepare.prepare_dataset(data, stage.workdir, layout="vox",
                                   splits=("train",), pitch_tracker="yin",
                                   progress=progress)
  if not report.prepared:
    raise DataError(f"no clip of {data / 'train'} could be prepared:\n"
                    f"{report.format()}")
  return {"seconds": time.perf_counter() - t0, "clips": len(report.prepared),
          "report": report.format().splitlines()[0]}


# --------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
  """``dagan-jax demo speak|dub`` (``args.demo_command``)."""
  import sys  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel

  from dagan_jax.evaluation import evaluator as E  # pylint: disable=import-outside-toplevel

  t_start = time.perf_counter()
  what = args.demo_command
  plan = speak_plan(args) if what == "speak" else dub_plan(args)
  progress = not args.no_progress
  data = _find(args.data, repo_root() / "data" / "speech_sample", "speech sample")
  out = pathlib.Path(args.out).expanduser().absolute()
  out.mkdir(parents=True, exist_ok=True)
  print(f"dagan-jax demo {what}: {len(plan)} stages into {out}", file=sys.stderr)
  for s in plan:
    if s.config:
      print(f"  {s.name}: {s.command()}", file=sys.stderr)
  metrics: dict = {"demo": what, "data": str(data), "stages": {}}
  timing: dict[str, float] = {}
  for i, stage in enumerate(plan):
    _announce(i, plan)
    t0 = time.perf_counter()
    if stage.config:
      metrics["stages"][stage.name] = train_stage(stage, progress=progress)
    elif stage.name == "prepare":
      metrics["stages"]["prepare"] = _prepare(stage, data, progress)
    elif stage.name == "speak":
      metrics["speak"] = _speak(stage, args, data, out, progress)
    else:
      metrics["dub"] = _dub(stage, args, data, out, progress)
    timing[f"{stage.name}_s"] = time.perf_counter() - t0
  if what == "speak" and args.renderer:
    metrics["renderer"] = str(args.renderer)
  timing["total_s"] = time.perf_counter() - t_start
  metrics["timing"] = timing
  metrics_path = out / "metrics.json"
  E.write_report(metrics_path, metrics)
  print(format_summary(metrics, metrics_path))
  return 0


def format_summary(metrics: dict, metrics_path) -> str:
  """The closing printout: each stage's losses, the outputs, the time."""
  what = metrics["demo"]
  lines = ["", f"dagan-jax demo {what} finished in "
           f"{metrics['timing']['total_s'] / 60:.1f} min"]
  for name, st in metrics["stages"].items():
    if "last_step" not in st:
      lines.append(f"  {name}: {st['report']} ({st['seconds']:.0f} s)")
      continue
    last, since = st["last_step"], st["first_logged"]
    terms = ([k for k in SHOWN_TERMS if k in since] or
             [k for k in since if not k.startswith("grad_norm")])
    change = ", ".join(
        f"{k} {since[k][1]:.4g}{'' if since[k][0] == 1 else f' (step {since[k][0]})'}"
        f" -> {last[k]:.4g}" for k in terms[:3])
    lines.append(f"  {name}: {st['steps']} steps in {st['seconds_in_all']:.0f} s"
                 f" ({change})")
    held = st.get("held_out_reconstruction") or {}
    before, after = held.get("before_training"), held.get("after_training")
    if before and after:
      lines.append(f"    held-out reconstruction L1 {before['reconstruction_l1']:.4f}"
                   f" -> {after['reconstruction_l1']:.4f} (copying the source: "
                   f"{after['copy_source_l1']:.4f})")
  res = metrics[what]
  lines.append(f"  {what}: {res['frames']} frames at {res['frame_size'][1]}x"
               f"{res['frame_size'][0]}, {res['speech_seconds']:.2f} s of speech, "
               f"{res['seconds_including_compilation']:.0f} s")
  for k, v in res["files"].items():
    lines.append(f"  {k + ':':14s}{v}")
  lines.append(f"  {'metrics:':14s}{metrics_path}")
  lines.append("  (minutes of CPU training: this checks the plumbing; motion and "
               "mouths are not good yet)")
  return "\n".join(lines)
