"""Speed, memory and work of DaGAN / DaGAN++ on the machine that runs this.

  python benchmarks/run.py [--quick] [--json OUT] [--markdown BENCHMARKS.md]

Rows (each runs in its own subprocess, so that its peak RSS is its own):

* ``peak``: the machine's float32 peak, measured here: the best of N runs of
  a large matmul and of a wide 3x3 convolution in JAX (and bfloat16 matmuls
  with float32 accumulation, for reference).
* ``inference:MODEL:B``: the per-frame function of
  :class:`dagan_jax.inference.animate.Animator` (driving depth -> driving
  keypoints -> keypoint normalisation -> generator ``decode`` on the source
  features cached by ``prepare_source``, inference rewrites on), B frames per
  call: frames/s (median over calls after a warm-up), compile time apart.
* ``training:MODEL:B``: the full talking-head step
  (:func:`dagan_jax.training.talking_head.make_train_step`: generator +
  keypoint detector update with every loss -- pyramid perceptual on a
  randomly initialised VGG19, GAN, feature matching, equivariance -- then the
  discriminator update) on a 1-device mesh, B samples: s/step, samples/s.
* ``input:MODEL:B``: records/s of the training input pipeline
  (:func:`dagan_jax.input.benchmark.measure_records_per_second` on the
  sample clips), next to what the training row of the same batch needs.
* A fourth field picks a variant: ``ynn`` / ``eigenconv`` (XLA's CPU
  library choice, below), ``bf16``, ``xla`` (``compute.kernels='xla'``: the
  plain program, as on accelerators), ``plain`` (inference without the
  inference rewrites), or ``jemalloc`` / ``tcmalloc`` / ``glibc-thp`` / ``system``:
  the row's process runs with that C allocator (:mod:`dagan_jax.allocator`;
  the other rows use ``--allocator``, default what the ``dagan-jax`` command
  picks on this machine).
* ``speak:MODEL:B`` (``MODEL`` of :data:`SPEAK_MODELS`: ``audio2head``, the
  released sizes; ``audio2head-tiny`` for tests): Audio2Head's speech ->
  talking head through :class:`dagan_jax.inference.speak.Speaker`, render
  batch B, random weights. A step is the steady-state work of ``seq_len /
  2`` output frames (32 at the released sizes: what each audio2kp window
  adds in the official loop): audio2pose on those frames' speech blocks
  (its image ResNet included), their pose boxes, one audio2kp window,
  rendering the frames from the keypoints (source encoded once per step) --
  the step ``benchmarks/official_ab.py`` times against the official code
  (its docstring says why this is the fair unit). frames/s = frames per step
  / median step, real-time factor = frames/s / 25 (seconds of video made
  per second), each stage's median apart; compile time = the first step
  less the median one. Then ``speak()`` end to end on the Audio2Head
  fixture's sentence (speech features with the model's pitch tracker
  included; its second call, the first compiles audio2pose for that
  length; ``--tiny``: its first half second): ``speak_realtime_x``. Speech
  blocks and face: the fixture's (:func:`benchmarks.official_ab.speak_inputs`).
* ``dub:MODEL:B`` (``MODEL`` of :data:`DUB_MODELS`: ``ip-lap``, the
  released sizes; ``ip-lap-tiny`` for tests): IP_LAP's visual dubbing
  through :class:`dagan_jax.inference.dub.Dubber`, render batch B, random
  weights, on the IP_LAP fixture's template frames (their faces from the
  fixture's face points) and official mel chunks. A step is the work of
  ``DUB_FRAMES`` = 5 output frames in steady state (in the official loop
  every output frame is one 5-frame window of the landmark generator and
  one renderer call with the 25 references): the 5 windows' landmarks in
  one call, their sketches drawn and faces rendered B per call, each face
  pasted back into its template frame -- the step
  ``benchmarks/official_ab.py`` times against the official code (its
  docstring says why). frames/s, real-time factor at 25 fps, compile time
  = the first step less the median one, and the median of each stage
  (landmarks / render / composite) per frame.
* ``training:MODEL:B`` with ``MODEL`` of :data:`TRAIN_MODELS`: one step of
  a speech model's trainer instead of the talking head's, random weights
  and random inputs of its records' shapes, 1 device, timed as the other
  training rows: ``audio2kp`` and ``audio2pose``
  (:mod:`dagan_jax.training.audio2kp` / ``audio2pose``, the released sizes
  of ``configs/audio2head_vox256.py``), ``ip-lap-landmark`` and
  ``ip-lap-renderer`` (:mod:`dagan_jax.training.ip_lap_landmark` /
  ``ip_lap_renderer``, ``configs/ip_lap_lrs2.py``; the renderer's full
  phase with a random VGG19); ``-tiny`` twins for the tests.
* ``profile-inference:MODEL:B`` / ``profile-training:MODEL:B``: where the
  time goes (:mod:`benchmarks.breakdown`).
* ``speech-prep``: what ``dagan-jax data prepare`` costs, stage by stage, on
  the sample clips with sound (``../shared/data/av_mini``): speech decoding,
  Audio2Head's rows (Harvest when pyworld is installed, and our YIN), IP_LAP's
  mel, the face mesh (frames/s), head poses, and a whole clip: real-time
  factors (seconds of video per second of work) and minutes per hour of
  video.

Every row reports the compiled program's FLOPs (loop-aware matmul + conv
count of the optimised HLO, :mod:`benchmarks.hlo_flops`, and XLA's own
``cost_analysis`` figure), its compiled peak memory (``memory_analysis``),
the process peak RSS, and the load average before and after. A row whose
compiled peak exceeds the available memory is skipped with the reason.
Models use random weights: costs depend on shapes only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from dagan_jax import allocator  # noqa: E402
from dagan_jax import compute  # noqa: E402
from dagan_jax.backends import xla_cpu  # noqa: E402

#: Models the rows refer to: config spec and a label for the tables.
MODELS = {
    "dagan256": {"config": "configs/vox256_dagan.py",
                 "label": "DaGAN 256x256 (vox-adv-256, 15 kp)"},
    "daganpp256": {"config": "configs/vox256_daganpp.py",
                   "label": "DaGAN++ 256x256"},
    "daganpp512": {"config": "configs/hdtf512_daganpp.py:daganpp",
                   "label": "DaGAN++ 512x512 (HDTF)"},
    "smoke": {"config": "configs/smoke.py",
              "label": "smoke (64x64, narrow; tests only)"},
}

#: Speech-driven models of the ``speak:`` rows: a config dict factory
#: (``kernels`` -> dict) and a label.
SPEAK_MODELS = {
    "audio2head": {"label": "Audio2Head 256x256 (released sizes, 10 kp, seq_len 64)"},
    "audio2head-tiny": {"label": "Audio2Head 256x256 at test widths (tests only)"},
}
#: Networks a Speaker loads.
SPEAK_NETWORKS = ("audio2pose", "audio2kp", "kp_detector", "generator")


def speak_config(model: str, kernels: str = "auto"):
  """The ConfigDict of speak row model ``model`` (see :data:`SPEAK_MODELS`):
  :func:`dagan_jax.config.audio2head_config`, or for ``audio2head-tiny``
  the same at test widths (256x256 frames, which Speaker needs; 4
  keypoints, 8-frame windows)."""
  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  if model not in SPEAK_MODELS:
    raise ValueError(f"unknown speak model {model!r}; expected one of "
                     f"{sorted(SPEAK_MODELS)}")
  d = config_lib.audio2head_config()
  if model == "audio2head-tiny":
    config_lib.toy_model(d, frame=256, num_kp=4)
    a2h = d["audio2head_params"]
    a2h["audio2kp"].update({"block_expansion": 8, "max_features": 32,
                            "num_blocks": 3, "seq_len": 8, "num_kp": 4})
    if "audio2pose" in a2h:
      a2h["audio2pose"] = {"embedding_dim": 32, "blocks": [1, 1, 1, 1]}
  d.setdefault("compute", {})["kernels"] = kernels
  return config_lib.from_dict(d)


#: IP_LAP models of the ``dub:`` rows (:func:`dub_config`).
DUB_MODELS = {
    "ip-lap": {"label": "IP_LAP 128x128 faces (released sizes: 4-layer "
                        "landmark Transformer, N = 25 references)"},
    "ip-lap-tiny": {"label": "IP_LAP at test sizes (1 layer, N = 2; tests only)"},
}


def dub_config(model: str, kernels: str = "auto"):
  """The ConfigDict of dub row model ``model`` (see :data:`DUB_MODELS`):
  :func:`dagan_jax.config.ip_lap_config` (the released sizes), or for
  ``ip-lap-tiny`` one Transformer layer of 2 heads, feed-forward 32, Nl = 3
  reference landmark sets and N = 2 reference faces (the renderer's widths
  and 128x128 faces are fixed)."""
  from dagan_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  if model not in DUB_MODELS:
    raise ValueError(f"unknown dub model {model!r}; expected one of "
                     f"{sorted(DUB_MODELS)}")
  d = config_lib.ip_lap_config()
  if model == "ip-lap-tiny":
    d["ip_lap_params"].update({"nlayers": 1, "nhead": 2, "dim_feedforward": 32,
                               "Nl": 3, "N": 2})
  d.setdefault("compute", {})["kernels"] = kernels
  return config_lib.from_dict(d)


#: Speech models of the ``training:`` rows beside :data:`MODELS`: one
#: training step of each stage's trainer (``stage``), config spec (with
#: ``overrides``) and label. Each ``-tiny`` twin is for the tests.
TRAIN_MODELS = {
    "audio2kp": {"stage": "audio2kp", "config": "configs/audio2head_vox256.py:audio2kp",
                 "label": "Audio2Head audio2kp (released sizes, 64-frame windows, 15 kp)"},
    "audio2pose": {"stage": "audio2pose",
                   "config": "configs/audio2head_vox256.py:audio2pose",
                   "label": "Audio2Head audio2pose (released sizes, 64-frame windows)"},
    "ip-lap-landmark": {"stage": "ip-lap-landmark", "config": "configs/ip_lap_lrs2.py:landmark",
                        "label": "IP_LAP landmark generator (released sizes, T = 5, Nl = 15)"},
    "ip-lap-renderer": {"stage": "ip-lap-renderer", "config": "configs/ip_lap_lrs2.py:renderer",
                        "label": "IP_LAP renderer, full phase (128x128, 3 references, "
                                 "pix2pixHD D 64 wide)"},
    "audio2kp-tiny": {"stage": "audio2kp", "config": "configs/audio2head_smoke.py:audio2kp",
                      "label": "audio2kp at smoke sizes (tests only)"},
    "audio2pose-tiny": {"stage": "audio2pose",
                        "config": "configs/audio2head_smoke.py:audio2pose",
                        "label": "audio2pose at smoke sizes (tests only)"},
    "ip-lap-landmark-tiny": {
        "stage": "ip-lap-landmark", "config": "configs/ip_lap_smoke.py:landmark",
        "overrides": {"ip_lap_params.nhead": 2, "ip_lap_params.dim_feedforward": 32,
                      "ip_lap_params.Nl": 3},
        "label": "IP_LAP landmark generator at test sizes (tests only)"},
    "ip-lap-renderer-tiny": {
        "stage": "ip-lap-renderer", "config": "configs/ip_lap_smoke.py:renderer",
        "overrides": {"ip_lap_params.img_size": 32, "train_params.num_refs": 1,
                      "train_params.discriminator.ndf": 8,
                      "train_params.discriminator.n_layers": 2},
        "label": "IP_LAP renderer at 32x32 (tests only)"},
}


#: The official PyTorch DaGAN on these machines (2 threads, float32,
#: vox-adv-256 with 15 kp, random weights), from
#: ../shared/fixtures/README.md: the yardstick of the ratio columns.
OFFICIAL_REFERENCE = {
    "source": "shared/fixtures/README.md (official PyTorch DaGAN, 2 CPU "
              "threads, float32, 15 kp)",
    "inference:dagan256:1": {"s_per_frame": 1.09},
    "training:dagan256:2": {"s_per_step": 13.5},
}

#: Row variants that change only XLA's compile options (``MODEL:B:VARIANT``):
#: which CPU library runs convolutions and dots. XLA:CPU (jax 0.10.2) hands
#: large convolutions and dots to YNNPACK by default; the package's CPU kernel
#: set asks for XLA's Eigen kernels instead (:mod:`dagan_jax.backends.xla_cpu`,
#: the rows without a variant). ``ynn`` measures XLA's default, ``eigenconv``
#: keeps dots on YNNPACK and gives convolutions to Eigen.
VARIANT_COMPILER_OPTIONS = {
    "ynn": {"xla_cpu_experimental_ynn_fusion_type": xla_cpu.YNNPACK_DEFAULT},
    "eigenconv": {"xla_cpu_experimental_ynn_fusion_type":
                  "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
}

#: Row variants that run the row's process with another C allocator
#: (:mod:`dagan_jax.allocator`) than the rest of the run (``--allocator``).
ALLOCATOR_VARIANTS = ("jemalloc", "tcmalloc", "glibc-thp", "system")

FULL_ROWS = (
    ["peak"]
    + [f"inference:{m}:{b}" for m in ("dagan256", "daganpp256", "daganpp512")
       for b in (1, 16)]
    + [f"training:{m}:{b}" for m in ("dagan256", "daganpp256", "daganpp512")
       for b in (2, 8)]
    + ["input:dagan256:2", "input:dagan256:8",
       "profile-inference:dagan256:1", "profile-training:dagan256:2",
       "speech-prep", "speak:audio2head:1", "speak:audio2head:8",
       "speak:audio2head:32", "dub:ip-lap:1", "dub:ip-lap:5",
       "training:audio2kp:4", "training:audio2pose:16",
       "training:ip-lap-landmark:32", "training:ip-lap-renderer:2"])
QUICK_ROWS = ["peak", "inference:dagan256:1", "inference:dagan256:16",
              "training:dagan256:2", "training:dagan256:8"]


# --------------------------------------------------------------------------
# Row workers (run in a subprocess)

def _peak_row(opts: dict[str, Any]) -> dict[str, Any]:
  """Best-of-N GFLOP/s of float32 matmul and 3x3 conv (and bf16 matmul)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  tiny = opts.get("tiny", False)
  n = 256 if tiny else 2048
  h, c = (16, 32) if tiny else (64, 256)
  batch = 1 if tiny else 4
  reps = 3 if tiny else int(opts.get("peak_reps", 10))
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((n, n), np.float32))
  b = jnp.asarray(rng.standard_normal((n, n), np.float32))
  x = jnp.asarray(rng.standard_normal((batch, h, h, c), np.float32))
  k = jnp.asarray(rng.standard_normal((3, 3, c, c), np.float32) / np.sqrt(9 * c))

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  cases = {
      "matmul_f32": (lambda a, b: a @ b, (a, b), 2.0 * n ** 3),
      "conv3x3_f32": (conv, (x, k), 2.0 * batch * h * h * c * c * 9),
      "matmul_bf16_f32acc": (
          lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32),
          (a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)), 2.0 * n ** 3),
  }
  out: dict[str, Any] = {"loadavg_before": common.loadavg()}
  for name, (fn, args, flops) in cases.items():
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(reps):
      t = time.perf_counter()
      jax.block_until_ready(compiled(*args))
      best = min(best, time.perf_counter() - t)
    out[name] = {"gflops_per_s": flops / best / 1e9, "best_s": best,
                 "gflop": flops / 1e9, "shape": str([tuple(v.shape) for v in args])}
  out["peak_f32_gflops_per_s"] = max(out["matmul_f32"]["gflops_per_s"],
                                     out["conv3x3_f32"]["gflops_per_s"])
  out["method"] = (f"best of {reps} runs (after a warm-up) of a {n}x{n} float32 "
                   f"matmul and a 3x3 conv {batch}x{h}x{h}x{c}->{c} in JAX; "
                   "peak = the larger")
  out["loadavg_after"] = common.loadavg()
  return out


def _frames(shape, batch, seed):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  return rng.random((batch, *shape[:2], 3), np.float32)


def _cost(compiled) -> dict[str, Any]:
  from benchmarks import hlo_flops  # pylint: disable=import-outside-toplevel
  out = common.compiled_cost(compiled)
  out["xla_flops"] = out.pop("flops", None)
  counted = hlo_flops.matmul_flops(compiled.as_text())
  out["flops"] = counted["flops"]
  out["loops"] = len(counted["loops"])
  out["unknown_trip_counts"] = counted["unknown_trip_counts"]
  return out


def inference_inputs(model: str, batch: int, inference_rewrites: bool = True,
                     kernels: str = "auto"
                     ) -> tuple[Any, tuple[Any, ...], float]:
  """Animate's per-frame function for ``model`` with random weights:
  ``(animator, args of animator.compiled.drive_fn, seconds prepare_source
  took, compile included)``. The source and the ``batch`` driving frames are
  random images; the source is prepared (cached) once, as the demo does."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from dagan_jax.inference import animate  # pylint: disable=import-outside-toplevel
  from dagan_jax.models import build  # pylint: disable=import-outside-toplevel
  cfg = common.load_config(MODELS[model]["config"], {"compute.kernels": kernels})
  models = build.build_models(cfg)
  abstract = build.abstract_variables(models, build.NETWORKS[:4])
  variables = common.random_variables(abstract, seed=0)
  an = animate.Animator(cfg, variables, batch_size=batch,
                        inference_rewrites=inference_rewrites)
  shape = an.frame_shape
  t = time.perf_counter()
  state = an.prepare_source(_frames(shape, 1, 1)[0])
  jax.block_until_ready(state)
  source_s = time.perf_counter() - t
  frames = _frames(shape, batch, 2)
  kp0 = an.keypoints(frames[:1])
  args = (an.variables, state, frames, kp0, np.bool_(True), np.bool_(True))
  return an, args, source_s


def _inference_row(model: str, batch: int, opts: dict[str, Any]) -> dict[str, Any]:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  variant = opts.get("variant", "")
  rewrites = variant != "plain"
  kernels = "xla" if variant == "xla" else "auto"
  an, args, source_s = inference_inputs(model, batch, rewrites, kernels)
  t = time.perf_counter()
  compiled = an.compiled.drive_fn.lower(*args).compile(
      compiler_options=VARIANT_COMPILER_OPTIONS.get(variant))
  compile_s = time.perf_counter() - t
  out: dict[str, Any] = {"inference_rewrites": rewrites, "kernels": kernels,
                         "frame_shape": list(an.frame_shape),
                         "compile_s": compile_s,
                         "prepare_source_s_incl_compile": source_s}
  if not _cost_and_time(compiled, lambda: jax.block_until_ready(compiled(*args)),
                        opts, out, "call"):
    return out
  out["s_per_frame"] = out["median_s"] / batch
  out["frames_per_s"] = batch / out["median_s"]
  out["frames_per_s_best"] = batch / out["min_s"]
  pred = np.asarray(compiled(*args)["prediction"])
  out["prediction_finite"] = bool(np.isfinite(pred).all())
  return out


def _speak_row(model: str, batch: int, opts: dict[str, Any]) -> dict[str, Any]:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from benchmarks import official_ab  # pylint: disable=import-outside-toplevel
  from dagan_jax.face.pose_boxes import pose_boxes  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference.speak import FPS, Speaker  # pylint: disable=import-outside-toplevel
  from dagan_jax.models import build  # pylint: disable=import-outside-toplevel
  variant = opts.get("variant", "")
  kernels = "xla" if variant == "xla" else "auto"
  cfg = speak_config(model, kernels)
  models = build.build_models(cfg)
  variables = build.init_variables(models, jax.random.key(0), names=SPEAK_NETWORKS)
  speaker = Speaker(cfg, variables, batch_size=batch)
  frames = speaker.seq_len // 2
  image, blocks = official_ab.speak_inputs(frames, speaker.seq_len)
  blocks = blocks[:frames]
  stages: dict[str, list[float]] = {"audio2pose": [], "pose boxes": [],
                                    "audio2kp (one window)": [], "render": []}
  held: dict[str, Any] = {}

  def step():
    t0 = time.perf_counter()
    poses = speaker.poses(image, blocks)
    t1 = time.perf_counter()
    boxes = pose_boxes(poses[:, :3], poses[:, 3:])
    t2 = time.perf_counter()
    value, jac = speaker.keypoints(image, blocks, boxes)
    t3 = time.perf_counter()
    held["frames"] = speaker.render(image, value, jac)
    t4 = time.perf_counter()
    for name, s in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
      stages[name].append(s)

  out: dict[str, Any] = {"kernels": kernels, "frames_per_step": frames,
                         "seq_len": speaker.seq_len, "window_batch": speaker.window_batch,
                         "pitch_tracker": speaker.pitch_tracker}
  first = _timed_once(step)
  for v in stages.values():
    v.clear()
  if opts.get("compile_only"):
    out.update({"first_step_s": first, "skipped": "compiled only (--compile-only): "
                "the first step (compile included), no timing"})
    return out
  budget = float(opts.get("max_row_seconds", 1800))
  out.update(common.time_calls(step, min_calls=int(opts.get("min_calls", 3)),
                               min_seconds=float(opts.get("min_seconds", 5)),
                               max_seconds=budget / 3))
  out["first_step_s"] = first
  out["compile_s"] = max(0.0, first - out["median_s"])
  out["s_per_frame"] = out["median_s"] / frames
  out["frames_per_s"] = frames / out["median_s"]
  out["frames_per_s_best"] = frames / out["min_s"]
  out["realtime_x"] = out["frames_per_s"] / FPS
  # The timed calls only (time_calls' warm-up call is in the lists first).
  n = len(out["times_s"])
  out["stages_s_per_frame"] = {name: float(np.median(v[-n:])) / frames
                               for name, v in stages.items()}
  out["prediction_finite"] = bool(np.isfinite(held["frames"]).all())
  # End to end: speech features + every network on a real sentence.
  samples = official_ab.speak_samples()
  if samples is not None:
    if opts.get("tiny"):   # half a second: 12 frames
      samples = samples[:8000]
    jax.block_until_ready(speaker.speak(image, samples))   # compiles audio2pose for T
    t = time.perf_counter()
    spoken = speaker.speak(image, samples)
    wall = time.perf_counter() - t
    out.update({"speak_samples": len(samples),
                "speak_seconds_of_speech": len(samples) / 16000,
                "speak_frames": len(spoken.frames), "speak_s": wall,
                "speak_realtime_x": len(spoken.frames) / FPS / wall})
  return out


def make_dubber(model: str, batch: int, kernels: str = "auto"):
  """A :class:`~dagan_jax.inference.dub.Dubber` of dub model ``model`` with
  random weights (:func:`common.random_variables`: no compile), ``batch``
  frames per render call and the step's ``DUB_FRAMES`` windows per
  landmark-generator call (one call per step, nothing padded)."""
  from benchmarks import official_ab  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference.dub import Dubber  # pylint: disable=import-outside-toplevel
  from dagan_jax.models import build  # pylint: disable=import-outside-toplevel
  cfg = dub_config(model, kernels)
  models = build.build_models(cfg)
  variables = common.random_variables(build.abstract_variables(
      models, build.IP_LAP_NETWORKS))
  return Dubber(cfg, variables, batch_size=batch, window_batch=official_ab.DUB_FRAMES)


def _dub_row(model: str, batch: int, opts: dict[str, Any]) -> dict[str, Any]:
  import numpy as np  # pylint: disable=import-outside-toplevel

  from benchmarks import official_ab  # pylint: disable=import-outside-toplevel
  variant = opts.get("variant", "")
  kernels = "xla" if variant == "xla" else "auto"
  frames = official_ab.DUB_FRAMES
  dubber = make_dubber(model, batch, kernels)
  template, chunks, refs, plan = official_ab.ours_dub_setup(dubber)
  stages: dict[str, list[float]] = {"landmarks": [], "render": [], "composite": []}
  held: dict[str, Any] = {}

  def step():
    t0 = time.perf_counter()
    content = dubber.landmarks(template, chunks, plan, refs)
    t1 = time.perf_counter()
    faces, _ = dubber.render(template, chunks, plan, content, refs)
    t2 = time.perf_counter()
    held["frames"] = dubber.composite(template, plan, faces)
    t3 = time.perf_counter()
    held["faces"] = faces
    for name, s in zip(stages, (t1 - t0, t2 - t1, t3 - t2)):
      stages[name].append(s)

  out: dict[str, Any] = {"kernels": kernels, "frames_per_step": frames,
                         "window_batch": dubber.window_batch,
                         "references": {"Nl": dubber.Nl, "N": dubber.N},
                         "landmark_layers": int(dubber.config.ip_lap_params.nlayers)}
  first = _timed_once(step)
  for v in stages.values():
    v.clear()
  if opts.get("compile_only"):
    out.update({"first_step_s": first, "skipped": "compiled only (--compile-only): "
                "the first step (compile included), no timing"})
    return out
  budget = float(opts.get("max_row_seconds", 1800))
  out.update(common.time_calls(step, min_calls=int(opts.get("min_calls", 3)),
                               min_seconds=float(opts.get("min_seconds", 5)),
                               max_seconds=budget / 3))
  out["first_step_s"] = first
  out["compile_s"] = max(0.0, first - out["median_s"])
  out["s_per_frame"] = out["median_s"] / frames
  out["frames_per_s"] = frames / out["median_s"]
  out["frames_per_s_best"] = frames / out["min_s"]
  out["realtime_x"] = out["frames_per_s"] / dubber.fps
  n = len(out["times_s"])   # the timed calls (time_calls' warm-up is first)
  out["stages_s_per_frame"] = {name: float(np.median(v[-n:])) / frames
                               for name, v in stages.items()}
  out["prediction_finite"] = bool(np.isfinite(held["faces"]).all())
  out["frame_shape"] = list(held["frames"].shape[1:])
  return out


def stage_training_inputs(model: str, batch: int, overrides: dict[str, Any] | None = None
                          ) -> tuple[Any, Any, Any, tuple[Any, ...], dict[str, Any]]:
  """One training step of a speech model of :data:`TRAIN_MODELS` on one
  device, random weights (:func:`common.random_variables`) and random
  inputs of the shapes its records have: ``(cfg, step, state, rest,
  info)``; ``step(state, *rest) -> (state, metrics)`` is the trainer's
  jitted step (it donates the state). The IP_LAP renderer runs its full
  phase (every loss, the discriminator's update) with a random VGG19 as
  the perceptual network."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from dagan_jax.models import build as build_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.training import parallel  # pylint: disable=import-outside-toplevel
  spec = TRAIN_MODELS[model]
  cfg = common.load_config(spec["config"], {"train_params.batch_size": batch,
                                            **spec.get("overrides", {}),
                                            **(overrides or {})})
  mesh = parallel.make_mesh([jax.devices()[0]])
  rng = np.random.default_rng(3)
  uniform = lambda *shape: rng.random(shape, np.float32)  # noqa: E731
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
  key = jax.random.key(4)
  info: dict[str, Any] = {}
  stage = spec["stage"]
  if stage in ("audio2kp", "audio2pose"):
    from dagan_jax.training import audio2head  # pylint: disable=import-outside-toplevel
    from dagan_jax.training import audio2kp as a2k  # pylint: disable=import-outside-toplevel
    from dagan_jax.training import audio2pose as a2p  # pylint: disable=import-outside-toplevel
    models = build_lib.build_models(cfg)
    trainer = a2k if stage == "audio2kp" else a2p
    task = trainer.make_task(cfg, models, steps_per_epoch=1000)
    v = common.random_variables(build_lib.abstract_variables(models, (stage,)))[stage]
    state = audio2head.SpeechState(step=jnp.zeros((), jnp.int32), params=v["params"],
                                   batch_stats=v.get("batch_stats", {}),
                                   opt_state=task.optimizer.init(v["params"]))
    t = trainer.window(cfg)
    h, w, _ = (int(d) for d in cfg.dataset_params.frame_shape)
    data = {"a2h_audio": normal(batch, t, 4, 41) * 5,
            "face_found": np.ones((batch, t), bool)}
    if stage == "audio2kp":
      k = int(cfg.audio2head_params.audio2kp.num_kp)
      s = audio2head.A2H_SIZE
      data.update({"source": uniform(batch, h, w, 3),
                   "boxes": (uniform(batch, t, s, s) > 0.95).astype(np.uint8) * 255,
                   "kp_value": uniform(batch, t, k, 2) * 2 - 1,
                   "kp_jacobian": normal(batch, t, k, 2, 2)})
    else:
      data.update({"image": uniform(batch, h, w, 3),
                   "pose": a2p.POSE_MIN + uniform(batch, t, 6) * (a2p.POSE_MAX - a2p.POSE_MIN)})
    step, rest = audio2head.make_train_step(task, mesh), ()
    info["window"] = t
  elif stage == "ip-lap-landmark":
    from dagan_jax.models import ip_lap_landmark as landmark_lib  # pylint: disable=import-outside-toplevel
    from dagan_jax.training import ip_lap  # pylint: disable=import-outside-toplevel
    from dagan_jax.training import ip_lap_landmark as lt  # pylint: disable=import-outside-toplevel
    task = lt.make_task(cfg)
    v = common.random_variables(landmark_lib.abstract_variables(task.model))
    state = ip_lap.IPLapState(step=jnp.zeros((), jnp.int32), params={lt.NET: v["params"]},
                              batch_stats={lt.NET: v["batch_stats"]},
                              opt_state={lt.NET: task.optimizer.init(v["params"])})
    ip = cfg.ip_lap_params
    t, nl = int(ip.T), int(ip.Nl)
    data = {"mels": normal(batch, t, 80, 16), "pose": uniform(batch, t, 74, 2),
            "content": uniform(batch, t, 57, 2), "ref_pose": uniform(batch, nl, 74, 2),
            "ref_content": uniform(batch, nl, 57, 2)}
    step, rest = lt.make_train_step(task, mesh), (key,)
    info.update({"T": t, "Nl": nl, "landmark_layers": int(ip.nlayers)})
  else:
    from dagan_jax.models import ip_lap_renderer as renderer_lib  # pylint: disable=import-outside-toplevel
    from dagan_jax.models import vgg as vgg_lib  # pylint: disable=import-outside-toplevel
    from dagan_jax.training import ip_lap  # pylint: disable=import-outside-toplevel
    from dagan_jax.training import ip_lap_renderer as rt  # pylint: disable=import-outside-toplevel
    vgg = vgg_lib.VGGFeatures(arch="vgg19")
    task = rt.make_task(cfg, steps_per_epoch=1000, vgg=vgg)
    s, t, r = task.img_size, task.num_sketches, int(cfg.train_params.num_refs)
    k = jax.random.key(0)
    r_vars = common.random_variables(jax.eval_shape(
        task.renderer.init, k, *renderer_lib.example_inputs(1, 1, t, s)))
    d_vars = common.random_variables(jax.eval_shape(
        task.discriminator.init, k, jnp.zeros((1, s, s, 3), jnp.float32)), seed=1)
    vgg_vars = common.random_variables(jax.eval_shape(
        vgg.init, k, jnp.zeros((1, 32, 32, 3), jnp.float32)), seed=2)
    params = {rt.NET: r_vars["params"], rt.DISC: d_vars["params"]}
    state = ip_lap.IPLapState(
        step=jnp.zeros((), jnp.int32), params=params,
        batch_stats={rt.NET: r_vars["batch_stats"]},
        opt_state={rt.NET: task.optimizer.init(params[rt.NET]),
                   rt.DISC: task.optimizer_d.init(params[rt.DISC])})
    data = {"face": uniform(batch, s, s, 3), "sketches": uniform(batch, t, s, s, 3),
            "ref_faces": uniform(batch, r, s, s, 3),
            "ref_sketches": uniform(batch, r, s, s, 3), "mel": normal(batch, 80, 16)}
    step = rt.make_steps(task, mesh)["full"]
    rest = (key, parallel.replicate(vgg_vars, mesh))
    info.update({"img_size": s, "num_refs": r, "perceptual_backbone":
                 "vgg19 (random weights)", "phase": "full"})
  state = parallel.replicate(state, mesh)
  return cfg, step, state, (parallel.global_batch(data, mesh),) + rest, info


def _stage_training_row(model: str, batch: int, opts: dict[str, Any]) -> dict[str, Any]:
  import jax  # pylint: disable=import-outside-toplevel

  variant = opts.get("variant", "")
  overrides = {"compute.kernels": "xla"} if variant == "xla" else {}
  cfg, step, state, rest, info = stage_training_inputs(model, batch, overrides)
  t = time.perf_counter()
  compiled = step.lower(state, *rest).compile(
      compiler_options=VARIANT_COMPILER_OPTIONS.get(variant))
  out: dict[str, Any] = {"compile_s": time.perf_counter() - t,
                         "stage": TRAIN_MODELS[model]["stage"],
                         "kernels": str(cfg.compute.kernels), **info}
  holder = {"state": state, "metrics": None}

  def one_step():
    holder["state"], holder["metrics"] = compiled(holder["state"], *rest)
    jax.block_until_ready(holder["metrics"])

  if not _cost_and_time(compiled, one_step, opts, out, "step"):
    return out
  out["s_per_step"] = out["median_s"]
  out["samples_per_s"] = batch / out["median_s"]
  metrics = {k: float(v) for k, v in jax.device_get(holder["metrics"]).items()}
  out["step_finite"] = metrics.get("finite", 0.0) == 1.0
  return out


def _timed_once(fn) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def _cost_and_time(compiled, call, opts: dict[str, Any], out: dict[str, Any],
                   unit: str) -> bool:
  """Adds ``compiled``'s FLOPs and memory to ``out``, then -- unless the
  program does not fit in memory or the run is ``--compile-only`` (both
  recorded as ``skipped``) -- times ``call``: the first call after compile,
  then steady-state calls within the row budget (only the first when one
  ``unit`` takes over a third of it). Returns whether it timed."""
  out.update(_cost(compiled))
  ok, why = common.fits_in_memory(out.get("peak_bytes"))
  if not ok:
    out["skipped"] = why
    return False
  if opts.get("compile_only"):
    out["skipped"] = "compiled only (--compile-only): FLOPs and memory, no timing"
    return False
  budget = float(opts.get("max_row_seconds", 1800))
  first = _timed_once(call)
  out["first_call_s"] = first
  if first * 3 > budget:
    out.update({"times_s": [first], "median_s": first, "min_s": first,
                "note": f"one {unit} takes {first:.0f} s: only the first "
                        f"{unit} after compile is timed (row budget)"})
  else:
    out.update(common.time_calls(call, min_calls=int(opts.get("min_calls", 3)),
                                 min_seconds=float(opts.get("min_seconds", 5)),
                                 max_seconds=budget / 2))
  return True


def training_inputs(model: str, batch: int, overrides: dict[str, Any] | None = None,
                    arch: str = "vgg19") -> tuple[Any, Any, Any, tuple[Any, ...]]:
  """The full training step of ``model`` on one device with random weights
  (``overrides`` on top of its config; ``arch``: the perceptual backbone):
  ``(cfg, task, step, (state, data, frozen, key))``, ``step`` being
  ``make_train_step``'s jitted step (it donates the state) and ``data`` a
  batch of random frames."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from dagan_jax.models import build as build_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.models import vgg as vgg_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.training import parallel  # pylint: disable=import-outside-toplevel
  from dagan_jax.training import talking_head as th  # pylint: disable=import-outside-toplevel
  cfg = common.load_config(MODELS[model]["config"],
                           {"train_params.batch_size": batch, **(overrides or {})})
  vgg = vgg_lib.VGGFeatures(arch=arch)
  task = th.make_task(cfg, global_batch_size=batch, steps_per_epoch=1000, vgg=vgg)
  mesh = parallel.make_mesh([jax.devices()[0]])
  abstract = build_lib.abstract_variables(task.models, th.TRAINED)
  state = th.create_train_state(task, common.random_variables(abstract, seed=0))
  frozen: dict[str, Any] = {}
  if task.use_depth_network:
    frozen["depth"] = common.random_variables(build_lib.abstract_variables(
        task.models, ("depth_encoder", "depth_decoder")), seed=1)
  frozen["vgg"] = common.random_variables(jax.eval_shape(
      lambda k: vgg.init(k, jnp.zeros((1, 32, 32, 3))), jax.random.key(0)), seed=2)
  h, w, _ = (int(v) for v in cfg.dataset_params.frame_shape)
  rng = np.random.default_rng(3)
  batch_np = {"source": rng.random((batch, h, w, 3), np.float32),
              "driving": rng.random((batch, h, w, 3), np.float32)}
  state = parallel.replicate(state, mesh)
  frozen = parallel.replicate(frozen, mesh)
  data = parallel.global_batch(batch_np, mesh)
  return cfg, task, th.make_train_step(task, mesh), (state, data, frozen,
                                                      jax.random.key(4))


def _training_row(model: str, batch: int, opts: dict[str, Any]) -> dict[str, Any]:
  import jax  # pylint: disable=import-outside-toplevel

  variant = opts.get("variant", "")
  overrides = {}
  if variant == "bf16":
    overrides["train_params.compute_dtype"] = "bfloat16"
  if variant == "xla":
    overrides["compute.kernels"] = "xla"
  arch = str(opts.get("vgg", "vgg19"))
  cfg, _, step, (state, data, frozen, key) = training_inputs(model, batch, overrides, arch)
  t = time.perf_counter()
  compiled = step.lower(state, data, frozen, key).compile(
      compiler_options=VARIANT_COMPILER_OPTIONS.get(variant))
  compile_s = time.perf_counter() - t
  out: dict[str, Any] = {"compile_s": compile_s, "perceptual_backbone":
                         f"{arch} (random weights)",
                         "compute_dtype": str(cfg.train_params.compute_dtype),
                         "kernels": str(cfg.compute.kernels)}
  holder = {"state": state, "i": 0, "metrics": None}

  def one_step():
    holder["state"], holder["metrics"] = compiled(
        holder["state"], data, frozen, jax.random.fold_in(key, holder["i"]))
    holder["i"] += 1
    jax.block_until_ready(holder["metrics"])

  if not _cost_and_time(compiled, one_step, opts, out, "step"):
    return out
  out["s_per_step"] = out["median_s"]
  out["samples_per_s"] = batch / out["median_s"]
  metrics = {k: float(v) for k, v in jax.device_get(holder["metrics"]).items()}
  out["step_finite"] = metrics.get("finite", 0.0) == 1.0
  return out


def _input_row(model: str, batch: int, opts: dict[str, Any]) -> dict[str, Any]:
  from dagan_jax.input import benchmark as input_bench  # pylint: disable=import-outside-toplevel
  root = input_bench._default_root()  # pylint: disable=protected-access
  if not root.exists():
    return {"skipped": f"no sample data at {root}"}
  workers = tuple(int(w) for w in str(opts.get("workers", "0,2")).split(","))
  res = input_bench.measure_records_per_second(
      root=root, workers=workers, batch_size=batch,
      num_batches=int(opts.get("num_batches", 6 if opts.get("quick") else 12)))
  res["data"] = f"{root.name} (256x256 mp4 clips, FOMM augmentation)"
  del model
  # ``kind`` there is the record kind; the row's kind stays "input".
  res["record_kind"] = res.pop("kind", None)
  return res


def _speech_prep_row(opts: dict[str, Any]) -> dict[str, Any]:
  """Stage timings of ``data prepare`` on a few sample clips with sound."""
  import glob  # pylint: disable=import-outside-toplevel

  from dagan_jax.audio import io as audio_io  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import mel as mel_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.audio import pitch, speech_features  # pylint: disable=import-outside-toplevel
  from dagan_jax.face import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.face import pose as pose_lib  # pylint: disable=import-outside-toplevel
  from dagan_jax.input import clip_faces, media, prepare  # pylint: disable=import-outside-toplevel
  clips = sorted(glob.glob(os.path.join(common.REPO, "..", "shared", "data",
                                        "av_mini", "test", "*.mp4")))
  if not clips:
    return {"skipped": "no sample clips with sound (../shared/data/av_mini)"}
  if not mesh_lib.face_available():
    return {"skipped": 'the face extra is not installed (pip install -e ".[face]")'}
  clips = clips[: 2 if opts.get("tiny") else 5]
  mesh = mesh_lib.FaceMesh(batch=16)
  seconds, frames = 0.0, 0
  stages: dict[str, float] = {}

  def timed(name, fn):
    t = time.perf_counter()
    out = fn()
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - t
    return out

  trackers = ["yin"] + (["harvest"] if pitch.harvest_available() else [])
  for clip in clips:
    n, fps, hw = media.probe_video(clip)
    seconds += n / float(fps or 25)
    frames += n
    samples = timed("decode speech", lambda: audio_io.read_speech(clip))
    for tr in trackers:
      timed(f"Audio2Head rows ({tr})", lambda: speech_features.features_from_samples(
          samples, tracker=tr))
    timed("IP_LAP mel", lambda: mel_lib.melspectrogram(audio_io.to_float(samples)))
    res = timed("face mesh (decode + mesh)", lambda: clip_faces.mesh_clip(clip, mesh))
    timed("head poses", lambda: pose_lib.head_poses(res.points, hw, res.found))
    timed(f"whole clip ({trackers[-1]})", lambda: prepare.prepare_clip(
        clip, fps=fps, mesh=mesh, pitch_tracker=trackers[-1]))
  out = {"clips": len(clips), "video_seconds": seconds, "frames": frames,
         "stages": {k: {"s": v, "realtime_x": seconds / v,
                        "min_per_hour": 60.0 * v / seconds}
                    for k, v in stages.items()},
         "mesh_frames_per_s": frames / stages["face mesh (decode + mesh)"]}
  return out


def _classify_inference(scopes: list[str]) -> str:
  path = "/".join(scopes)
  if "ResnetEncoder" in path or "DepthDecoder" in path:
    return "depth network (driving)"
  if "KPDetector" in path:
    return "keypoint detector (driving)"
  for key, label in (("dense_motion_network", "generator: dense motion"),
                     ("AttnModule", "generator: depth-aware attention"),
                     ("attention_", "generator: cross-modal attention"),
                     ("bottleneck_r", "generator: bottleneck ResBlocks"),
                     ("up_blocks", "generator: up-blocks"),
                     ("fuse_blocks", "generator: fuse blocks"),
                     ("final", "generator: final 7x7 conv")):
    if key in path:
      return label
  if "Generator" in path:
    return "generator: warps, occlusion, rest"
  return "keypoint normalisation, rest"


def _classify_training(scopes: list[str]) -> str:
  path = "/".join(scopes)
  if "VGGFeatures" in path:
    return "perceptual VGG19 (pyramid)"
  if "MultiScaleDiscriminator" in path:
    return "discriminator"
  if "ResnetEncoder" in path or "DepthDecoder" in path:
    return "depth network (frozen)"
  if "KPDetector" in path:
    return "keypoint detector"
  if "Generator" in path:
    for key, label in (("dense_motion_network", "generator: dense motion"),
                       ("bottleneck_r", "generator: bottleneck ResBlocks"),
                       ("up_blocks", "generator: up-blocks"),
                       ("down_blocks", "generator: encoders"),
                       ("first", "generator: encoders"),
                       ("AttnModule", "generator: attention"),
                       ("attention_", "generator: attention")):
      if key in path:
        return label
    return "generator: rest"
  if "optax" in path or "adam" in path.lower():
    return "optimizer"
  return "losses, pyramid, TPS, optimizer, rest"


def _profile_row(kind: str, model: str, batch: int, opts: dict[str, Any]
                 ) -> dict[str, Any]:
  import flax  # pylint: disable=import-outside-toplevel
  flax.config.update("flax_profile", True)  # named scopes per linen module
  import jax  # pylint: disable=import-outside-toplevel

  from benchmarks import breakdown  # pylint: disable=import-outside-toplevel
  runs = int(opts.get("profile_runs", 3))
  if kind == "profile-inference":
    an, args, _ = inference_inputs(model, batch)
    compiled = an.compiled.drive_fn.lower(*args).compile(
        compiler_options=VARIANT_COMPILER_OPTIONS.get(opts.get("variant", "")))
    res = breakdown.time_by_scope(compiled, args, runs=runs,
                                  classify=_classify_inference)
  else:
    _, task, step, args = training_inputs(model, batch)
    # No donation here: the profiler calls the step several times on the
    # same state.
    compiled = compute.jit(step.__wrapped__ if hasattr(step, "__wrapped__") else step,
                           kernels=task.kernels).lower(*args).compile(
                           compiler_options=VARIANT_COMPILER_OPTIONS.get(
                               opts.get("variant", "")))
    res = breakdown.time_by_scope(compiled, args, runs=runs,
                                  classify=_classify_training)
  # The profiler's op (thunk) times need not cover the whole call: compare.
  wall = common.time_calls(lambda: jax.block_until_ready(compiled(*args)),
                           min_calls=2, min_seconds=0.0)["min_s"]
  return {"total_thunk_s": res["total_s"], "wall_s": wall,
          "thunk_coverage": res["total_s"] / wall,
          "variant": opts.get("variant", ""),
          "groups": [{"name": n, "s": s, "share": sh} for n, s, sh in res["groups"]],
          "runs": runs, "method": "jax.profiler trace; per-op minimum over runs; "
          "grouped by the linen module scopes of each op's metadata"}


def run_worker(row: str, opts: dict[str, Any]) -> dict[str, Any]:
  """Runs one row in this process and returns its result dict."""
  parts = row.split(":")
  kind = parts[0]
  out: dict[str, Any] = {"row": row, "kind": kind,
                         # the C allocator this row's process runs with
                         "malloc_env": {k: os.environ[k] for k in allocator.ENV_VARS
                                        if k in os.environ}}
  t = time.perf_counter()
  if kind == "peak":
    out.update(_peak_row(opts))
  elif kind == "speech-prep":
    out.update(_speech_prep_row(opts))
  else:
    model, batch = parts[1], int(parts[2])
    if len(parts) > 3:
      opts = {**opts, "variant": parts[3]}
    out.update({"model": model, "batch": batch, "variant": opts.get("variant", "")})
    if kind == "inference":
      out.update(_inference_row(model, batch, opts))
    elif kind == "training" and model in TRAIN_MODELS:
      out.update(_stage_training_row(model, batch, opts))
    elif kind == "training":
      out.update(_training_row(model, batch, opts))
    elif kind == "input":
      out.update(_input_row(model, batch, opts))
    elif kind == "speak":
      out.update(_speak_row(model, batch, opts))
    elif kind == "dub":
      out.update(_dub_row(model, batch, opts))
    elif kind in ("profile-inference", "profile-training"):
      out.update(_profile_row(kind, model, batch, opts))
    else:
      raise ValueError(f"unknown row kind {kind!r}")
  out["row_wall_s"] = time.perf_counter() - t
  out["peak_rss_bytes"] = common.peak_rss_bytes()
  return out


def _failed_row(row: str, error: str, **extra: Any) -> dict[str, Any]:
  """The result of a row that failed before it reported: its spec's fields
  (model, batch, variant where the row names them) and the error, so that
  tables can still place it."""
  parts = row.split(":")
  out: dict[str, Any] = {"row": row, "kind": parts[0], "error": error}
  if len(parts) >= 3:
    out["model"] = parts[1]
    try:
      out["batch"] = int(parts[2])
    except ValueError:
      out["batch"] = parts[2]
    out["variant"] = parts[3] if len(parts) > 3 else ""
  out.update(extra)
  return out


def run_row_subprocess(row: str, opts: dict[str, Any], timeout: float,
                       env: dict[str, str] | None = None) -> dict[str, Any]:
  """``run_worker(row)`` in a fresh Python process (own RSS, own caches),
  with ``env`` added to its environment (the C allocator's variables)."""
  with tempfile.TemporaryDirectory() as tmp:
    out_path = os.path.join(tmp, "row.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", row,
           "--worker-out", out_path, "--opts", json.dumps(opts)]
    t = time.perf_counter()
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            check=False, cwd=common.REPO,
                            env={**os.environ, **env} if env else None)
    except subprocess.TimeoutExpired:
      return _failed_row(row, f"timed out after {timeout:.0f} s",
                         row_wall_s=timeout)
    if proc.returncode != 0 or not os.path.exists(out_path):
      tail = (proc.stderr or proc.stdout or "")[-2000:]
      return _failed_row(row, f"exit {proc.returncode}: {tail}",
                         row_wall_s=time.perf_counter() - t)
    with open(out_path) as f:
      return json.load(f)


# --------------------------------------------------------------------------
# Report

def _attach_derived(results: list[dict[str, Any]]) -> None:
  """Achieved FLOP/s and fraction of peak; the input rows' need."""
  peak = next((r for r in results if r.get("kind") == "peak" and
               "peak_f32_gflops_per_s" in r), None)
  steps = {(r.get("model"), r.get("batch")): r.get("s_per_step")
           for r in results if r.get("kind") == "training" and r.get("s_per_step")
           and not r.get("variant")}
  for r in results:
    secs = r.get("median_s")
    if r.get("flops") and secs:
      r["achieved_gflops_per_s"] = r["flops"] / secs / 1e9
      if peak:
        r["fraction_of_peak"] = r["achieved_gflops_per_s"] / peak["peak_f32_gflops_per_s"]
    if r.get("kind") == "training" and r.get("flops"):
      r["gflop_per_step"] = r["flops"] / 1e9
    if r.get("kind") == "inference" and r.get("flops"):
      r["gflop_per_frame"] = r["flops"] / r["batch"] / 1e9
    ref = OFFICIAL_REFERENCE.get(f"{r.get('kind')}:{r.get('model')}:{r.get('batch')}")
    if ref and r.get("s_per_frame"):
      r["speedup_vs_official"] = ref["s_per_frame"] / r["s_per_frame"]
    if ref and r.get("s_per_step"):
      r["speedup_vs_official"] = ref["s_per_step"] / r["s_per_step"]
    if r.get("kind") == "input":
      need_s = steps.get((r.get("model"), r.get("batch")))
      if need_s:
        r["step_seconds"] = need_s
        r["need_records_per_s"] = r["batch"] / need_s
        for key, val in r.items():
          if key.startswith("workers=") and isinstance(val, dict):
            val["headroom"] = val["records_per_s"] / r["need_records_per_s"]


def _fmt(v: Any, spec: str = ".3g") -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return format(v, spec)
  return str(v)


def _load(r: dict[str, Any]) -> str:
  a, b = r.get("loadavg_before"), r.get("loadavg_after")
  if not a:
    return "-"
  return f"{a[0]:.1f}->{b[0]:.1f}" if b else f"{a[0]:.1f}"


def _status(r: dict[str, Any]) -> str | None:
  if r.get("error"):
    return "error: " + r["error"].strip().splitlines()[-1][:160]
  if r.get("skipped"):
    return "skipped: " + r["skipped"]
  return None


def _label(r: dict[str, Any]) -> str:
  model = r.get("model", r.get("row", "?"))
  known = {**MODELS, **SPEAK_MODELS, **DUB_MODELS, **TRAIN_MODELS}
  label = known.get(model, {}).get("label", model)
  return label + (f" [{r['variant']}]" if r.get("variant") else "")


def _achieved(r: dict[str, Any]) -> str:
  frac = r.get("fraction_of_peak")
  return (_fmt(r.get("achieved_gflops_per_s"), ".0f")
          + (f" ({100 * frac:.0f}%)" if frac else ""))


def _memory_cells(r: dict[str, Any]) -> str:
  """Compiled peak | process peak RSS."""
  return (f"{common.human_bytes(r.get('peak_bytes'))} | "
          f"{common.human_bytes(r.get('peak_rss_bytes'))}")


def markdown_report(report: dict[str, Any]) -> str:
  """The result tables as markdown (machine, versions, date, rows)."""
  m = report["machine"]
  res = report["results"]
  peak = next((r for r in res if r.get("kind") == "peak"), {})
  lines = [
      f"Measured {m['date']} on `{m['host']}`: {m['cpu']}, {m['cpu_count']} "
      f"cores ({', '.join(m['cpu_flags'])}), "
      f"{common.human_bytes(m.get('mem_total_bytes'))} RAM, {m['device']}; "
      f"Python {m['python']}, jax {m['jax']}, jaxlib {m['jaxlib']}, flax "
      f"{m['flax']}, numpy {m['numpy']}; commit {m['commit']}"
      + (f"; XLA_FLAGS `{m['xla_flags']}`" if m.get("xla_flags") else "")
      + "".join(f"; {name} `{value}`"
                for name, value in m.get("package_env", {}).items())
      + (f"; C allocator: {m['allocator']}" if m.get("allocator") else "")
      + f". Load average at start: {m['loadavg'][0]:.1f} "
      f"(1 min; the machine is shared, see each row). Command: "
      f"`{report['command']}`.", ""]
  if peak.get("peak_f32_gflops_per_s"):
    lines += [
        f"Machine peak (float32): **{peak['peak_f32_gflops_per_s']:.0f} GFLOP/s** "
        f"= {peak['method']}: matmul {peak['matmul_f32']['gflops_per_s']:.0f}, "
        f"conv {peak['conv3x3_f32']['gflops_per_s']:.0f}; bfloat16 matmul "
        f"(float32 accumulation) {peak['matmul_bf16_f32acc']['gflops_per_s']:.0f} "
        f"GFLOP/s (load {_load(peak)}).", ""]
  inf = [r for r in res if r.get("kind") == "inference"]
  if inf:
    lines += ["**Inference** (animate's per-frame function, source cached, "
              "inference rewrites; frames/s = batch / median call time)", "",
              "| model | batch | frames/s | s/frame (median / best) | vs official | "
              "compile s | GFLOP/frame | achieved GFLOP/s (% peak) | compiled peak | "
              "peak RSS | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in inf:
      label = _label(r)
      st = _status(r)
      if st:
        lines.append(f"| {label} | {r.get('batch', '-')} | {st} | | | "
                     f"{_fmt(r.get('compile_s'), '.0f')} | "
                     f"{_fmt(r.get('gflop_per_frame'), '.1f')} | | "
                     f"{_memory_cells(r)} | {_load(r)} |")
        continue
      sp = r.get("speedup_vs_official")
      lines.append(
          f"| {label} | {r['batch']} | {r['frames_per_s']:.3g} | "
          f"{r['s_per_frame']:.3g} / {r['min_s'] / r['batch']:.3g} | "
          f"{(f'{sp:.2f}x' if sp else '-')} | {r['compile_s']:.0f} | "
          f"{_fmt(r.get('gflop_per_frame'), '.1f')} | "
          f"{_achieved(r)} | "
          f"{_memory_cells(r)} | {_load(r)} |")
    lines.append("")
  tr = [r for r in res if r.get("kind") == "training"
        and r.get("model") not in TRAIN_MODELS]
  if tr:
    lines += ["**Training** (full step: G + kp detector update with perceptual "
              "pyramid, GAN, feature matching, equivariance; then D update; "
              "1 device)", "",
              "| model | batch | s/step (median / best) | samples/s | vs official | "
              "compile s | GFLOP/step | achieved GFLOP/s (% peak) | compiled peak | "
              "peak RSS | perceptual net | load |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in tr:
      label = _label(r)
      st = _status(r)
      if st:
        lines.append(f"| {label} | {r.get('batch', '-')} | {st} | | | "
                     f"{_fmt(r.get('compile_s'), '.0f')} | "
                     f"{_fmt(r.get('gflop_per_step'), '.0f')} | | "
                     f"{_memory_cells(r)} | "
                     f"{r.get('perceptual_backbone', '-')} | {_load(r)} |")
        continue
      sp = r.get("speedup_vs_official")
      lines.append(
          f"| {label} | {r['batch']} | {r['s_per_step']:.3g} / {r['min_s']:.3g} | "
          f"{r['samples_per_s']:.3g} | {(f'{sp:.2f}x' if sp else '-')} | "
          f"{r['compile_s']:.0f} | {_fmt(r.get('gflop_per_step'), '.0f')} | "
          f"{_achieved(r)} | "
          f"{_memory_cells(r)} | "
          f"{r.get('perceptual_backbone', '-')} | {_load(r)} |")
    lines.append("")
  sp = [r for r in res if r.get("kind") == "speak"]
  if sp:
    lines += ["**Speech -> talking head** (`Speaker`: per step, audio2pose on "
              "the step's speech, pose boxes, one audio2kp window, the "
              "window's frames rendered with the source encoded once; "
              "frames/s = frames per step / median step; x real time = "
              "frames/s / 25; `speak()` = a whole call on the fixture's "
              "sentence, speech features included)", "",
              "| model | batch | frames/s | s/frame (median / best) | x real time | "
              "audio2pose / boxes / audio2kp / render s/frame | compile s | "
              "speak() x real time | peak RSS | load |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sp:
      label = _label(r)
      st = _status(r)
      if st:
        lines.append(f"| {label} | {r.get('batch', '-')} | {st} | | | | "
                     f"{_fmt(r.get('compile_s'), '.0f')} | | "
                     f"{common.human_bytes(r.get('peak_rss_bytes'))} | {_load(r)} |")
        continue
      parts = " / ".join(f"{v:.3f}" for v in r["stages_s_per_frame"].values())
      lines.append(
          f"| {label} | {r['batch']} | {r['frames_per_s']:.3g} | "
          f"{r['s_per_frame']:.3g} / {r['min_s'] / r['frames_per_step']:.3g} | "
          f"{r['realtime_x']:.2f} | {parts} | {r['compile_s']:.0f} | "
          f"{_fmt(r.get('speak_realtime_x'), '.2f')} | "
          f"{common.human_bytes(r.get('peak_rss_bytes'))} | {_load(r)} |")
    lines.append("")
  dub = [r for r in res if r.get("kind") == "dub"]
  if dub:
    lines += ["**Visual dubbing** (`Dubber`: per step, 5 output frames = 5 "
              "windows of the landmark generator in one call, their frames "
              "rendered B per call with the references sent once, pasted "
              "back; frames/s = 5 / median step; x real time = frames/s / "
              "25; face mesh and mel are outside the step)", "",
              "| model | batch | frames/s | s/frame (median / best) | x real time | "
              "landmarks / render / composite s/frame | compile s | peak RSS | load |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in dub:
      label = _label(r)
      st = _status(r)
      if st:
        lines.append(f"| {label} | {r.get('batch', '-')} | {st} | | | | "
                     f"{_fmt(r.get('compile_s'), '.0f')} | "
                     f"{common.human_bytes(r.get('peak_rss_bytes'))} | {_load(r)} |")
        continue
      parts = " / ".join(f"{v:.3f}" for v in r["stages_s_per_frame"].values())
      lines.append(
          f"| {label} | {r['batch']} | {r['frames_per_s']:.3g} | "
          f"{r['s_per_frame']:.3g} / {r['min_s'] / r['frames_per_step']:.3g} | "
          f"{r['realtime_x']:.3f} | {parts} | {r['compile_s']:.0f} | "
          f"{common.human_bytes(r.get('peak_rss_bytes'))} | {_load(r)} |")
    lines.append("")
  st_rows = [r for r in res if r.get("kind") == "training"
             and r.get("model") in TRAIN_MODELS]
  if st_rows:
    lines += ["**Training the speech models** (one step of each stage's "
              "trainer, random weights and inputs, 1 device: audio2kp / "
              "audio2pose Adam steps; IP_LAP's landmark generator with "
              "dropout; IP_LAP's renderer in its full phase: VGG19 "
              "perceptual pyramid with the Gram term, LSGAN and feature "
              "matching, then the discriminator's update)", "",
              "| model | batch | s/step (median / best) | samples/s | compile s | "
              "GFLOP/step | achieved GFLOP/s (% peak) | compiled peak | peak RSS | "
              "load |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in st_rows:
      label = _label(r)
      st = _status(r)
      if st:
        lines.append(f"| {label} | {r.get('batch', '-')} | {st} | | "
                     f"{_fmt(r.get('compile_s'), '.0f')} | "
                     f"{_fmt(r.get('gflop_per_step'), '.0f')} | | "
                     f"{_memory_cells(r)} | {_load(r)} |")
        continue
      lines.append(
          f"| {label} | {r['batch']} | {r['s_per_step']:.3g} / {r['min_s']:.3g} | "
          f"{r['samples_per_s']:.3g} | {r['compile_s']:.0f} | "
          f"{_fmt(r.get('gflop_per_step'), '.1f')} | {_achieved(r)} | "
          f"{_memory_cells(r)} | {_load(r)} |")
    lines.append("")
  ip = [r for r in res if r.get("kind") == "input"]
  if ip:
    lines += ["**Input pipeline** (pair records/s after the first batch, "
              "next to the training step's need = batch / s per step)", "",
              "| data | batch | workers | records/s | first batch s | step needs "
              "records/s | headroom |", "|---|---|---|---|---|---|---|"]
    for r in ip:
      st = _status(r)
      if st:
        lines.append(f"| - | {r.get('batch', '-')} | {st} | | | | |")
        continue
      for key, val in r.items():
        if key.startswith("workers=") and isinstance(val, dict):
          lines.append(
              f"| {r.get('data', '-')} | {r['batch']} | {key.split('=')[1]} | "
              f"{val['records_per_s']:.3g} | {val['first_batch_s']:.2g} | "
              f"{_fmt(r.get('need_records_per_s'))} | "
              f"{_fmt(val.get('headroom'), '.3g')} |")
    lines.append("")
  for r in res:
    if r.get("kind", "").startswith("profile") and r.get("groups"):
      what = "inference frame" if r["kind"] == "profile-inference" else "training step"
      if r.get("variant"):
        what += f" [{r['variant']}]"
      lines += [f"**Where the time goes**: {MODELS[r['model']]['label']}, "
                f"{what}, batch {r['batch']} ({r['method']})", "",
                "| part | s | share |", "|---|---|---|"]
      for g in r["groups"]:
        if g["share"] >= 0.005:
          lines.append(f"| {g['name']} | {g['s']:.3f} | {100 * g['share']:.1f}% |")
      lines += [f"| total (sum of op times) | {r['total_thunk_s']:.3f} | |"]
      if r.get("wall_s"):
        lines += [f"| wall time of one call (best) | {r['wall_s']:.3f} | "
                  f"{100 * r['thunk_coverage']:.0f}% covered |"]
      lines.append("")
  for r in res:
    if r.get("kind") == "speech-prep":
      st = _status(r)
      if st:
        lines += [f"**data prepare**: {st}", ""]
        continue
      lines += [f"**data prepare** ({r['clips']} av_mini clips, "
                f"{r['video_seconds']:.1f} s of 25 fps video; face mesh "
                f"{r['mesh_frames_per_s']:.0f} frames/s)", "",
                "| stage | s | x real time | min per hour of video |",
                "|---|---|---|---|"]
      for name, v in r["stages"].items():
        lines.append(f"| {name} | {v['s']:.2f} | {v['realtime_x']:.2f} | "
                     f"{v['min_per_hour']:.1f} |")
      lines.append("")
  errs = [r for r in res if r.get("kind") == "profile" and _status(r)]
  for r in errs:
    lines.append(f"- {r['row']}: {_status(r)}")
  return "\n".join(lines).rstrip() + "\n"


def update_markdown(path: str, section: str, body: str) -> None:
  """Replaces (or appends) the block between the ``section`` markers."""
  begin = f"<!-- benchmarks:{section}:begin (written by benchmarks/run.py) -->"
  end = f"<!-- benchmarks:{section}:end -->"
  text = ""
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  block = f"{begin}\n{body}{end}"
  if begin in text and end in text:
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    text = pre + block + post
  else:
    text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
  with open(path, "w") as f:
    f.write(text)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="the 256x256 DaGAN inference and training rows only")
  parser.add_argument("--rows", default=None,
                      help="comma-separated rows (e.g. inference:dagan256:1,peak)")
  parser.add_argument("--json", default=None, help="write every figure here")
  parser.add_argument("--markdown", default=None,
                      help="update this markdown file's results section")
  parser.add_argument("--section", default="cpu",
                      help="name of the markdown section (one per machine kind)")
  parser.add_argument("--timeout", type=float, default=None,
                      help="seconds per row (default 900 quick, 7200 full)")
  parser.add_argument("--max-row-seconds", type=float, default=None,
                      help="timed-call budget per row (default 300 quick, 1800)")
  parser.add_argument("--append", action="store_true",
                      help="keep the rows already in --json (a row measured "
                           "again replaces its old result)")
  parser.add_argument("--compile-only", action="store_true",
                      help="inference/training rows: compile and report FLOPs "
                           "and memory, skip the timed calls")
  parser.add_argument("--in-process", action="store_true",
                      help="run rows in this process (tests; RSS is shared)")
  parser.add_argument("--tiny", action="store_true",
                      help="small peak measurement and few calls (tests)")
  parser.add_argument("--allocator", default=None, choices=allocator.CHOICES,
                      help="C allocator of the row processes (default: "
                           "$DAGAN_JAX_ALLOCATOR or auto, as the dagan-jax "
                           "command; dagan_jax/allocator.py)")
  parser.add_argument("--render", action="store_true",
                      help="run nothing: write the tables of the report in "
                           "--json (to stdout and --markdown's --section)")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--opts", default="{}", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.worker:
    result = run_worker(args.worker, json.loads(args.opts))
    with open(args.worker_out, "w") as f:
      json.dump(result, f)
    return 0

  if args.render:
    if not args.json or not os.path.exists(args.json):
      parser.error(f"--render needs an existing --json report, got {args.json!r}")
    with open(args.json) as f:
      report = json.load(f)
    _attach_derived(report["results"])
    md = markdown_report(report)
    print(md)
    if args.markdown:
      update_markdown(args.markdown, args.section, md)
    return 0

  rows = (args.rows.split(",") if args.rows else
          QUICK_ROWS if args.quick else FULL_ROWS)
  opts: dict[str, Any] = {"quick": args.quick, "tiny": args.tiny,
                          "max_row_seconds": args.max_row_seconds or
                          (300 if args.quick else 1800)}
  if args.compile_only:
    opts["compile_only"] = True
  if args.quick or args.tiny:
    opts.update({"min_calls": 2, "min_seconds": 2.0})
  timeout = args.timeout or (900 if args.quick else 7200)
  try:
    alloc_desc, alloc_env = allocator.allocator_env(choice=args.allocator)
  except allocator.AllocatorError as e:
    parser.error(str(e))
  if args.in_process:  # rows share this process, started as it was
    alloc_desc, alloc_env = "this process's", {}
  import jax  # pylint: disable=import-outside-toplevel,unused-import
  report: dict[str, Any] = {
      "command": "python benchmarks/run.py " + " ".join(
          a for a in (argv if argv is not None else sys.argv[1:])),
      "machine": {**common.machine_info(), "allocator": alloc_desc,
                  "allocator_env": alloc_env},
      "official_reference": OFFICIAL_REFERENCE, "results": []}
  if args.append and args.json and os.path.exists(args.json):
    with open(args.json) as f:
      report["results"] = [r for r in json.load(f)["results"]
                           if r.get("row") not in rows]
  for row in rows:
    print(f"[benchmarks] {row} (load {common.loadavg()[0]:.1f}) ...", flush=True)
    if args.in_process:
      try:
        result = run_worker(row, opts)
      except Exception as e:  # pylint: disable=broad-except
        result = _failed_row(row, repr(e))
    else:
      row_desc, row_env = alloc_desc, alloc_env
      variant = (row.split(":") + ["", "", "", ""])[3]
      try:
        if variant in ALLOCATOR_VARIANTS:
          row_desc, row_env = allocator.allocator_env(choice=variant)
      except allocator.AllocatorError as e:
        result = _failed_row(row, str(e))
      else:
        result = run_row_subprocess(row, opts, timeout, row_env)
      result.setdefault("allocator", row_desc)
    report["results"].append(result)
    brief = {k: result.get(k) for k in ("frames_per_s", "s_per_step", "compile_s",
                                        "peak_f32_gflops_per_s", "skipped", "error")
             if result.get(k) is not None}
    print(f"[benchmarks] {row}: {brief}", flush=True)
    _attach_derived(report["results"])
    if args.json:  # keep what is done so far
      with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
  md = markdown_report(report)
  print(md)
  if args.markdown:
    update_markdown(args.markdown, args.section, md)
  return 0


if __name__ == "__main__":
  sys.exit(main())
