"""``dagan-jax data prepare``: what speech-driven training needs, once per clip.

Audio2Head and IP_LAP train on windows of frames with their speech features
and labels; computing those every epoch would cost far more than reading the
frames (Harvest's pitch alone runs at about 0.4x real time on 2 cores). So
each clip is prepared once, into ``<out>/<split>/<clip name>.npz``:

==================  ==============  ==========================================
key                 shape           what
==================  ==============  ==========================================
``num_frames``      ()              T, the clip's video frames
``fps``             ()              its frame rate (25 where it has none)
``a2h_features``    (R, 41) f32     Audio2Head's rows, 100 per second
                                    (:mod:`dagan_jax.audio.speech_features`)
``mel``             (80, M) f32     IP_LAP's log-mel (:mod:`dagan_jax.audio.mel`)
``mesh``            (T, 468, 3) f32 face-mesh points, pixels, NaN: no face
``face_found``      (T,) bool       frames with a face
``num_faces``       (T,) i32        faces BlazeFace saw in each frame
``crop_box``        (3,) f32        the clip's square ``[x0, y0, side]``
                                    (:mod:`dagan_jax.face.crop`)
``pose``            (T, 6) f32      head pose, axis-angle + translation, NaN:
                                    no face (:mod:`dagan_jax.face.pose`)
``kp_value``        (T, K, 2) f32   with ``--model``: the model's keypoints on
``kp_jacobian``     (T, K, 2, 2)    the clip's crop at the model's frame size
``source_stat``     (2,) i64        the clip's (mtime_ns, size) when prepared
``tools``           () str          JSON: what produced the arrays
==================  ==============  ==========================================

``<out>/manifest.json`` records the dataset (root, layout), the tools (pitch
tracker, mesh models' fingerprint, head template's hash, crop rule, model
directory and a hash of its config) and each prepared clip. Files are
written atomically, so an interrupted run loses at most the clip in hand;
rerunning skips every clip whose file exists, was made by the same tools
and whose source has not changed since (its ``source_stat``). Tools that
differ from the manifest's are an error naming both: a prepared folder
never mixes two pitch trackers or two keypoint models.

A clip that cannot be prepared (no sound, a sound that does not decode, no
face in any frame) is reported, the others go on; the run exits 1 if any
clip failed. Streaming the result: :mod:`dagan_jax.input.av_windows`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from dagan_jax.errors import ConfigError, DaganError, DataError
from dagan_jax.input import clips as clips_lib

log = logging.getLogger("dagan_jax.input")

FORMAT = 1
MANIFEST = "manifest.json"
DEFAULT_FPS = 25.0


def clip_file(out: str | os.PathLike, split: str, name: str) -> pathlib.Path:
  """Where clip ``name`` of ``split`` is prepared (names may hold ``/``)."""
  return pathlib.Path(out) / split / f"{name}.npz"


def _sha(path: str, n: int = 16) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:n]


def tools_record(pitch_tracker: str, mesh_fingerprint: str,
                 model_dir: str | None, model_config: Any = None) -> dict:
  """What produces prepared arrays; equal records mean interchangeable files."""
  from dagan_jax.face import crop, pose  # pylint: disable=import-outside-toplevel
  rec = {"pitch": pitch_tracker, "mesh_models": mesh_fingerprint,
         "head_template": _sha(pose.TEMPLATE_FILE),
         "crop": {"scale": crop.SCALE, "raise": crop.RAISE},
         "camera": {"focal": pose.FOCAL, "centre": pose.CENTRE, "frame": pose.FRAME},
         "model": None}
  if model_dir is not None:
    cfg = model_config.to_dict() if hasattr(model_config, "to_dict") else model_config
    text = json.dumps(cfg.get("model_params", cfg), sort_keys=True, default=str)
    rec["model"] = {"dir": os.path.abspath(model_dir),
                    "model_params_sha": hashlib.sha256(text.encode()).hexdigest()[:16]}
  return rec


def _atomic_write(path: pathlib.Path, write) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


PREPARE_HINT = "run `dagan-jax data prepare` for this dataset"


def read_manifest(out: str | os.PathLike, *, required: bool = True) -> dict | None:
  """``<out>/manifest.json`` with its format checked; a missing one is a
  :class:`DataError` (None when not ``required``)."""
  p = pathlib.Path(out) / MANIFEST
  try:
    with open(p) as f:
      data = json.load(f)
  except FileNotFoundError:
    if not required:
      return None
    raise DataError(f"{p} not found: {out} is not a prepared folder; "
                    f"{PREPARE_HINT}") from None
  except (OSError, ValueError) as e:
    raise DataError(f"{p}: cannot read it ({e}); {PREPARE_HINT}") from e
  fmt = data.get("format") if isinstance(data, dict) else None
  if fmt != FORMAT:
    raise DataError(f"{p}: format {fmt!r}; this version reads format {FORMAT}: "
                    f"{PREPARE_HINT} again")
  return data


def _write_manifest(out: pathlib.Path, manifest: dict) -> None:
  _atomic_write(out / MANIFEST,
                lambda f: f.write(json.dumps(manifest, indent=1, sort_keys=True).encode()))


@dataclasses.dataclass
class PrepareReport:
  prepared: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)   # already done
  failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  #: clip -> frames without a face (clips with some, prepared anyway: their
  #: windows carry ``face_found``)
  faceless: dict[str, int] = dataclasses.field(default_factory=dict)
  frames: int = 0
  seconds: float = 0.0
  audio_seconds: float = 0.0
  stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def ok(self) -> bool:
    return not self.failed

  def format(self) -> str:
    lines = [f"prepared {len(self.prepared)} clip(s), {self.frames} frames, in "
             f"{self.seconds:.1f} s; {len(self.skipped)} already prepared"]
    if self.audio_seconds > 0 and self.seconds > 0:
      lines.append(f"  {self.audio_seconds / self.seconds:.2f}x real time "
                   f"({3600 * self.seconds / self.audio_seconds / 60:.1f} min per "
                   "hour of video); stages: " + ", ".join(
                       f"{k} {v:.1f} s" for k, v in sorted(self.stage_seconds.items())))
    if self.faceless:
      worst = sorted(self.faceless.items(), key=lambda kv: -kv[1])[:10]
      lines.append(f"  {len(self.faceless)} clip(s) have frames without a face: "
                   + ", ".join(f"{k} ({v})" for k, v in worst)
                   + (" ..." if len(self.faceless) > 10 else ""))
    for name, why in self.failed:
      lines.append(f"  FAILED {name}: {why}")
    return "\n".join(lines)


class _Clock:
  def __init__(self, report: PrepareReport):
    self.report = report

  def __call__(self, stage: str):
    clock = self

    class _Span:
      def __enter__(self):
        self.t = time.perf_counter()

      def __exit__(self, *exc):
        d = clock.report.stage_seconds
        d[stage] = d.get(stage, 0.0) + time.perf_counter() - self.t
    return _Span()


def prepare_clip(path: str, *, fps: float | None, mesh, pitch_tracker: str,
                 animator=None, clock=None) -> dict[str, np.ndarray]:
  """The arrays of one clip (module docstring), without the bookkeeping."""
  from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import mel as mel_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import sources  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import speech_features  # pylint: disable=import-outside-toplevel
  from dagan_jax.face import crop, pose  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import clip_faces  # pylint: disable=import-outside-toplevel
  clock = clock or (lambda stage: _nullspan())
  src = sources.audio_source(path)
  if src is None:
    raise DataError(f"{path}: no sound (no audio stream and no sidecar "
                    f"{os.path.basename(sources.sidecar_path(path))})")
  with clock("audio"):
    samples = audio_io.read_speech(src)
    rows, _ = speech_features.features_from_samples(samples, tracker=pitch_tracker,
                                                    where=src)
    mel = mel_lib.melspectrogram(audio_io.to_float(samples))
  with clock("mesh"):
    res = clip_faces.mesh_clip(path, mesh)
  if not res.found.any():
    raise DataError(f"{path}: no face in any of its {len(res.found)} frames")
  hw = _frame_hw(path)
  with clock("pose"):
    box = crop.clip_box(res.points, res.found, where=path)
    poses = pose.head_poses(res.points, hw, res.found)
  out = {"num_frames": np.int64(len(res.found)), "fps": np.float64(fps or DEFAULT_FPS),
         "a2h_features": rows.astype(np.float32), "mel": mel.astype(np.float32),
         "mesh": res.points, "face_found": res.found, "num_faces": res.num_faces,
         "crop_box": box, "pose": poses}
  if animator is not None:
    with clock("keypoints"):
      kp = _keypoints(path, box, animator)
    out["kp_value"], out["kp_jacobian"] = kp["value"], kp["jacobian"]
  return out


class _nullspan:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False


def _frame_hw(path: str) -> tuple[int, int]:
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  return tuple(media.probe_video(path)[2])


def _keypoints(path: str, box, animator, chunk: int = 64) -> dict[str, np.ndarray]:
  """The model's keypoints on the clip's crop at the model's frame size,
  read a chunk at a time (a long clip never sits in memory whole)."""
  from dagan_jax.face import crop  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import media  # pylint: disable=import-outside-toplevel
  h, w = animator.frame_shape[:2]
  values, jacs, buf = [], [], []

  def flush():
    frames = crop.crop(np.stack(buf), box, (h, w)).astype(np.float32) / 255.0
    kp = animator.keypoints(frames)
    values.append(kp["value"])
    jacs.append(kp["jacobian"])
    buf.clear()

  for _, frame in media.iter_native_frames(path):
    buf.append(frame)
    if len(buf) == chunk:
      flush()
  if buf:
    flush()
  return {"value": np.concatenate(values).astype(np.float32),
          "jacobian": np.concatenate(jacs).astype(np.float32)}


class KeypointModel:
  """A DaGAN / DaGAN++ model directory's keypoint detector (with its depth
  network when it has one) on batches of frames, as animation computes the
  driving keypoints: one compiled function, inference rewrites on."""

  def __init__(self, model_dir: str, batch: int = 16):
    from dagan_jax import checkpoints, compute  # pylint: disable=import-outside-toplevel
    from dagan_jax.models import build  # pylint: disable=import-outside-toplevel
    self.config, self.variables = checkpoints.load_model(
        model_dir, required=("kp_detector",))
    models = build.build_models(self.config)
    self.frame_shape = tuple(models.frame_shape)
    self.batch = batch
    with_depth = models.use_depth

    def run(variables, frames):
      disp = build.depth_fn(models, variables, frames) if with_depth else None
      kp = build.keypoints_fn(models, variables, frames, disp)
      return {"value": kp["value"], "jacobian": kp["jacobian"]}

    if with_depth and "depth_encoder" not in self.variables:
      raise ConfigError(f"{model_dir}: its keypoint detector sees depth but the "
                        "directory has no depth network")
    self._fn = compute.jit(run, kernels=str(self.config["compute"]["kernels"]),
                           inference=True)

  def keypoints(self, frames: np.ndarray) -> dict[str, np.ndarray]:
    """``{'value': (T, K, 2), 'jacobian': (T, K, 2, 2)}`` of (T, H, W, 3)
    frames in [0, 1] at the model's frame size (padded to whole batches, so
    every call runs the same program)."""
    import jax  # pylint: disable=import-outside-toplevel
    out = {"value": [], "jacobian": []}
    for i in range(0, len(frames), self.batch):
      chunk = frames[i:i + self.batch]
      n = len(chunk)
      if n < self.batch:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - n, 0)])
      kp = jax.device_get(self._fn(self.variables, chunk))
      for k in out:
        out[k].append(np.asarray(kp[k][:n]))
    return {k: np.concatenate(v) for k, v in out.items()}


def _up_to_date(file: pathlib.Path, stat: tuple[int, int], tools: dict) -> bool:
  if not file.is_file():
    return False
  try:
    with np.load(file) as z:
      return (tuple(int(v) for v in z["source_stat"]) == stat
              and json.loads(str(z["tools"])) == tools)
  except (OSError, ValueError, KeyError):
    return False     # a damaged file is prepared again


def prepare_dataset(root: str | os.PathLike, out: str | os.PathLike, *,
                    layout: str = "vox", splits: Sequence[str] | None = None,
                    pitch_tracker: str = "auto", model_dir: str | None = None,
                    batch: int = 16, cache_dir: str | None = None,
                    progress: bool = True) -> PrepareReport:
  """Prepares every clip of ``root``'s splits into ``out`` (module docstring)."""
  from dagan_jax.audio import pitch  # pylint: disable=import-outside-toplevel
  from dagan_jax.face import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  if layout not in clips_lib.LAYOUTS:
    raise ConfigError(f"layout {layout!r}; expected one of {clips_lib.LAYOUTS}")
  splits = tuple(splits or clips_lib.DEFAULT_SPLITS[layout])
  out = pathlib.Path(out)
  mesh = mesh_lib.FaceMesh(batch=batch)
  animator = KeypointModel(model_dir) if model_dir is not None else None
  tools = tools_record(pitch.tracker_name(pitch_tracker), mesh.fingerprint,
                       model_dir, animator.config if animator else None)
  manifest = read_manifest(out, required=False) or {"format": FORMAT, "clips": {}}
  if manifest.get("tools") not in (None, tools):
    raise ConfigError(
        f"{out / MANIFEST} was prepared with other tools:\n  "
        f"{json.dumps(manifest['tools'], sort_keys=True)}\nnow:\n  "
        f"{json.dumps(tools, sort_keys=True)}\n(prepare into a new folder, "
        "or delete the old one)")
  manifest.update({"root": os.path.abspath(root), "layout": layout, "tools": tools})
  out.mkdir(parents=True, exist_ok=True)
  _write_manifest(out, manifest)

  report = PrepareReport()
  clock = _Clock(report)
  t0 = time.perf_counter()
  todo = []
  for split in splits:
    index = clips_lib.scan_split(root, split, layout, cache_dir=cache_dir)
    for bad in index.bad:
      report.failed.append((bad.path, bad.reason))
    for i, c in enumerate(index.clips):
      path = index.path(i)
      st = os.stat(path)
      stat = (st.st_mtime_ns, st.st_size)
      f = clip_file(out, split, c.name)
      if _up_to_date(f, stat, tools):
        report.skipped.append(f"{split}/{c.name}")
      else:
        todo.append((split, c, path, stat, f))
  bar = None
  if progress and todo:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    bar = tqdm(total=sum(c.num_frames for _, c, *_ in todo), unit="frame",
               desc="prepare", dynamic_ncols=True)
  try:
    for split, c, path, stat, f in todo:
      key = f"{split}/{c.name}"
      try:
        arrays = prepare_clip(path, fps=c.fps, mesh=mesh, pitch_tracker=pitch_tracker,
                              animator=animator, clock=clock)
      except DaganError as e:
        report.failed.append((key, str(e)))
        log.warning("cannot prepare %s: %s", path, e)
        if bar:
          bar.update(c.num_frames)
        continue
      arrays["source_stat"] = np.asarray(stat, np.int64)
      arrays["tools"] = np.asarray(json.dumps(tools, sort_keys=True))
      _atomic_write(f, lambda fh, a=arrays: np.savez(fh, **a))
      found = arrays["face_found"]
      manifest["clips"][key] = {
          "frames": int(arrays["num_frames"]), "fps": float(arrays["fps"]),
          "frames_without_face": int((~found).sum()),
          "frames_with_several_faces": int((arrays["num_faces"] > 1).sum())}
      _write_manifest(out, manifest)
      report.prepared.append(key)
      if (~found).any():
        report.faceless[key] = int((~found).sum())
      report.frames += int(arrays["num_frames"])
      report.audio_seconds += int(arrays["num_frames"]) / float(arrays["fps"])
      if bar:
        bar.update(c.num_frames)
        bar.set_postfix_str(c.name[-24:])
  finally:
    if bar:
      bar.close()
  report.seconds = time.perf_counter() - t0
  return report
