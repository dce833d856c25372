"""Same-time comparison with the official PyTorch DaGAN: alternating steps.

The "vs official" column of BENCHMARKS.md divides the official code's times
in ``../shared/fixtures/README.md`` (measured once, at another time) by ours.
On a shared machine whose speed drifts by 10-20% over a day that ratio can
be far off. This script measures both at the same time instead: it starts
one long-lived worker process per contender (each compiles or builds once),
then asks them in turn for one step each, round after round, alternating the
order every round, and reports each one's median and the median of the
per-round ratios.

Contenders (``NAME=KIND[:ARG][@ALLOCATOR][,VAR=VALUE...]``, any number):

* ``official-train:LAYERS`` -- the official training step at batch 2
  (``GeneratorFullModel`` + ``DiscriminatorFullModel`` with the official
  ``train.py``'s three Adam updates; 15 keypoints, RGB-D keypoints as
  ``--rgbd``), random weights, with a ResNet-``LAYERS`` face depth network
  (the official training code hard-codes ResNet-50; its demo uses 18).
* ``ours-train:LAYERS[/KERNELS]`` -- ours, the same step
  (``configs/vox256_dagan.py``); ``KERNELS`` sets ``compute.kernels``
  ('auto' by default, 'xla' for the plain program).
* ``official-animate`` -- one frame of the official ``demo.py`` loop
  (driving depth with ResNet-18, keypoints, ``normalize_kp`` with relative
  motion and adaptive scale, generator), batch 1.
* ``ours-animate[:KERNELS]`` -- animate's per-frame function (source
  cached), batch 1.
* ``official-speak[:nograd]`` -- the official Audio2Head inference
  (``inference.py``'s ``audio2head``) for ``SPEAK_FRAMES`` = 32 output frames
  in steady state, see below; ``:nograd`` runs it under ``torch.no_grad``
  (the official loop keeps autograd on).
* ``ours-speak[:KERNELS[/BATCH]]`` -- ours, the same work through
  :class:`dagan_jax.inference.speak.Speaker` (render batch ``BATCH``,
  Speaker's default when absent), released sizes
  (:func:`dagan_jax.config.audio2head_config`), random weights
  (``build.init_variables``).

**The speak step, and why it is the fair unit.** The official loop runs
audio2pose once over the whole speech, then one audio2kp window of
``seq_len`` = 64 frames per ``seq_len / 2`` = 32 output frames, and for each
output frame the generator on the source image -- which re-encodes the
source and reruns the dense-motion network's source side every frame;
``kp_detector(img)`` runs once per window. Per-frame work is therefore
lumpy (a window every 32 frames), so one step is the steady-state work of
32 output frames, identical on both sides:

* audio2pose on the 32 frames' speech blocks (its audio ResNet-34 and 32
  LSTM steps; the image ResNet-34, which runs once per video, is in both
  steps too: a small over-count, equal on both sides);
* the pose boxes: official, the 64 boxes its window loop draws with
  ``draw_annotation_box``; ours, the 33 rows ``speak`` draws
  (:mod:`dagan_jax.face.pose_boxes`);
* one audio2kp window (64 frames; ours pads the slots past the 32 frames
  with zeros as the official code pads the end of speech: the same work);
* official: ``kp_detector(img)`` and 32 generator calls on ``img`` (its
  kept slots ``[16, 48)`` of the window), each frame made uint8 as the loop
  does; ours: ``Speaker.render`` of the 32 frames in batches of ``BATCH``,
  the source encoded once per call (a whole clip encodes it once: ours is
  charged once per 32 frames, as the official ``kp_detector``), frames made
  uint8 too.

Both read the same face and speech blocks (the Audio2Head fixture's,
:func:`speak_inputs`). Speech features (MFCC, filterbanks, Harvest) are
not in the step: the same pyworld Harvest dominates them on both sides
(``benchmarks/run.py``'s ``speech-prep`` and ``speak`` rows time ours). The
official networks are built unmodified from its ``config/vox-256.yaml``
and ``config/parameters.yaml`` (10 keypoints, seq_len 64) with torch's
default random initialisation, in eval mode, torch on 2 threads; the CPU
patches are those of the fixture maker (``.cuda()`` a no-op, numpy's
``np.float`` alias back; the YAML files are read with ``safe_load``).
Seconds are per step: divide by 32 for seconds per frame (the driver
prints both).

``@ALLOCATOR`` starts that worker with a C allocator of
:mod:`dagan_jax.allocator` (``jemalloc``, ``tcmalloc``, ``mimalloc``, ``glibc-thp``,
``auto``: what the ``dagan-jax`` command picks here); without it a worker
runs with this process's (``system``), whichever contender it is.
``,VAR=VALUE`` items are added to that worker's environment.
``--repo NAME=DIR`` runs contender ``NAME``'s worker from another checkout
of this repository (its own ``benchmarks/official_ab.py``): the same-time
A/B of two commits, e.g. ``--repo base=../base base=ours-train:50
new=ours-train:50``.

The official DaGAN workers need a checkout of harlanhong/CVPR2022-DaGAN
(``--official-dir``), ``torch`` and ``torchvision``; the speak worker one of
wangsuzhen/Audio2Head (no licence: it is run, never copied), ``torch``,
``pyyaml`` and what its ``inference.py`` imports (python_speech_features,
pyworld, scipy, scikit-image, opencv, imageio). They run the official
modules unmodified and patch only what stops them on a CPU machine without
the authors' files: ``.cuda()`` is a no-op, the depth checkpoints the
training code loads from fixed paths are replaced by freshly initialised
ones, VGG19 is built without downloading ImageNet weights, and
``animate.py``'s unused dataset / logger imports are stubbed. Torch uses 2
threads (as the fixture README's figures).

    python benchmarks/official_ab.py --official-dir ../CVPR2022-DaGAN \
        --rounds 8 off=official-train:50 ours=ours-train:50
    python benchmarks/official_ab.py --official-dir /tmp/a2h_official \
        --rounds 4 off=official-speak ours=ours-speak
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
  sys.path.insert(0, REPO)

from dagan_jax import allocator  # noqa: E402  (no JAX import)
from dagan_jax import config as config_lib  # noqa: E402  (no JAX import)

KINDS = ("official-train", "ours-train", "official-animate", "ours-animate",
         "official-speak", "ours-speak")
#: Contenders whose step makes SPEAK_FRAMES video frames.
SPEAK_KINDS = ("official-speak", "ours-speak")


# --------------------------------------------------------------------------
# Workers: print "ready", then one line "<seconds> <value>" per "step" line.

def _serve(step) -> None:
  print("ready", flush=True)
  for line in sys.stdin:
    if line.strip() != "step":
      break
    t = time.perf_counter()
    value = step()
    print(f"{time.perf_counter() - t:.4f} {value:.6g}", flush=True)


def _import_official(official_dir: str) -> Any:
  """Imports torch with the official checkout on the path, CPU patches on."""
  sys.path.insert(0, official_dir)
  os.chdir(official_dir)  # the official code opens config files relative to it
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(2)
  try:
    import torchvision  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except RuntimeError:
    # A torchvision wheel built for another torch variant fails registering
    # its C++ operators; the official code needs only its Python models.
    sys.modules.pop("torchvision", None)
    sys.modules["torchvision._meta_registrations"] = types.ModuleType(
        "torchvision._meta_registrations")
    import torchvision  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  from torchvision import models  # pylint: disable=import-outside-toplevel
  vgg19 = models.vgg19
  models.vgg19 = lambda pretrained=False, **kw: vgg19(weights=None)
  torch.nn.Module.cuda = lambda self, *a, **kw: self
  torch.Tensor.cuda = lambda self, *a, **kw: self
  return torch


def _official_config(num_kp: int = 15) -> dict[str, Any]:
  import yaml  # pylint: disable=import-outside-toplevel
  with open("config/vox-adv-256.yaml") as f:
    cfg = yaml.safe_load(f)
  cfg["model_params"]["common_params"]["num_kp"] = num_kp
  # run.py's defaults: --kp_distance 10, --depth_constraint 0.
  cfg["train_params"]["loss_weights"]["kp_distance"] = 10
  cfg["train_params"]["loss_weights"]["depth_constraint"] = 0
  return cfg


def official_train_worker(official_dir: str, layers: int, batch: int) -> None:
  torch = _import_official(official_dir)
  import depth  # pylint: disable=import-outside-toplevel,import-error
  encoder_cls = depth.ResnetEncoder
  depth.ResnetEncoder = lambda n, pretrained, *a, **kw: encoder_cls(layers, False, *a, **kw)
  torch_load = torch.load

  def fresh_depth_weights(path, *a, **kw):
    encoder = encoder_cls(layers, False)
    if str(path).endswith("encoder.pth"):
      return encoder.state_dict()
    return depth.DepthDecoder(num_ch_enc=encoder.num_ch_enc, scales=range(4)).state_dict()

  import modules.generator as gen_lib  # pylint: disable=import-outside-toplevel,import-error
  import modules.keypoint_detector as kpd_lib  # pylint: disable=import-outside-toplevel,import-error
  from modules.discriminator import MultiScaleDiscriminator  # pylint: disable=import-outside-toplevel,import-error
  from modules.model import DiscriminatorFullModel, GeneratorFullModel  # pylint: disable=import-outside-toplevel,import-error
  cfg = _official_config()
  mp, tp = cfg["model_params"], cfg["train_params"]
  torch.manual_seed(0)
  generator = gen_lib.DepthAwareGenerator(**mp["generator_params"], **mp["common_params"])
  discriminator = MultiScaleDiscriminator(**mp["discriminator_params"], **mp["common_params"])
  mp["common_params"]["num_channels"] = 4
  kp_detector = kpd_lib.KPDetector(**mp["kp_detector_params"], **mp["common_params"])
  # DataParallel without GPUs calls the module itself; the official full
  # models read ``.module`` attributes.
  generator, discriminator, kp_detector = (
      torch.nn.DataParallel(m) for m in (generator, discriminator, kp_detector))
  opt = argparse.Namespace(use_depth=False, rgbd=True, kp_prior=False)
  torch.load = fresh_depth_weights
  try:
    generator_full = GeneratorFullModel(kp_detector, generator, discriminator, tp, opt)
  finally:
    torch.load = torch_load
  discriminator_full = DiscriminatorFullModel(kp_detector, generator, discriminator, tp)
  adam = lambda m: torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999))  # noqa: E731
  opt_g, opt_d, opt_k = adam(generator), adam(discriminator), adam(kp_detector)
  for m in (generator, discriminator, kp_detector):
    m.train()
  rng = torch.Generator().manual_seed(3)
  x = {"source": torch.rand(batch, 3, 256, 256, generator=rng),
       "driving": torch.rand(batch, 3, 256, 256, generator=rng)}

  def step() -> float:  # the body of the official train.py loop
    losses, generated = generator_full(x)
    loss = sum(v.mean() for v in losses.values())
    loss.backward()
    opt_g.step()
    opt_g.zero_grad()
    opt_k.step()
    opt_k.zero_grad()
    opt_d.zero_grad()
    d_loss = sum(v.mean() for v in discriminator_full(x, generated).values())
    d_loss.backward()
    opt_d.step()
    opt_d.zero_grad()
    return float(loss.detach())

  _serve(step)


def stub_animate_imports() -> None:
  """``animate.py`` imports the dataset and logger modules, which its
  ``normalize_kp`` does not use (and which need files and packages a CPU
  machine may lack): empty stand-ins take their place."""
  for name, attrs in (("frames_dataset", ("PairedDataset",)),
                      ("logger", ("Logger", "Visualizer"))):
    stub = types.ModuleType(name)
    for attr in attrs:
      setattr(stub, attr, None)
    sys.modules[name] = stub


def official_animate_worker(official_dir: str) -> None:
  torch = _import_official(official_dir)
  stub_animate_imports()
  import depth  # pylint: disable=import-outside-toplevel,import-error
  import modules.generator as gen_lib  # pylint: disable=import-outside-toplevel,import-error
  from animate import normalize_kp  # pylint: disable=import-outside-toplevel,import-error
  from modules.keypoint_detector import KPDetector  # pylint: disable=import-outside-toplevel,import-error
  mp = _official_config()["model_params"]
  torch.manual_seed(0)
  generator = gen_lib.DepthAwareGenerator(**mp["generator_params"], **mp["common_params"])
  mp["common_params"]["num_channels"] = 4
  kp_detector = KPDetector(**mp["kp_detector_params"], **mp["common_params"])
  encoder = depth.ResnetEncoder(18, False)
  decoder = depth.DepthDecoder(num_ch_enc=encoder.num_ch_enc, scales=range(4))
  for m in (generator, kp_detector, encoder, decoder):
    m.eval()
  rng = torch.Generator().manual_seed(3)
  source = torch.rand(1, 3, 256, 256, generator=rng)
  frames = torch.rand(4, 1, 3, 256, 256, generator=rng)
  disp = lambda img: decoder(encoder(img))[("disp", 0)]  # noqa: E731
  with torch.no_grad():  # the source side, once per video as demo.py does
    depth_source = disp(source)
    kp_source = kp_detector(torch.cat((source, depth_source), 1))
    kp_initial = kp_detector(torch.cat((frames[0], disp(frames[0])), 1))
  count = [0]

  def step() -> float:  # the body of demo.py's per-frame loop
    frame = frames[count[0] % len(frames)]
    count[0] += 1
    with torch.no_grad():
      depth_map = disp(frame)
      kp_driving = kp_detector(torch.cat((frame, depth_map), 1))
      kp_norm = normalize_kp(kp_source=kp_source, kp_driving=kp_driving,
                             kp_driving_initial=kp_initial,
                             use_relative_movement=True, use_relative_jacobian=True,
                             adapt_movement_scale=True)
      out = generator(source, kp_source=kp_source, kp_driving=kp_norm,
                      source_depth=depth_source, driving_depth=depth_map)
    return float(out["prediction"].mean())

  _serve(step)


# --------------------------------------------------------------------------
# Audio2Head: speech -> talking head

#: Output frames in one speak step: ``seq_len // 2`` of the released
#: Audio2Head (seq_len 64), the frames one audio2kp window adds in the
#: official loop once past the first window.
SPEAK_FRAMES = 32


def a2h_fixture_npz() -> str:
  """The Audio2Head fixture's arrays, whose face and speech both speak
  workers use when it is there (the official inference's input image and
  the speech blocks of an espeak sentence): ``$DAGAN_A2H_FIXTURE/
  fixture.npz``, else ``audio2head_small`` under ``$DAGAN_SHARED/fixtures``
  (default ``../shared`` beside the repository), as the tests find it."""
  folder = os.environ.get("DAGAN_A2H_FIXTURE") or os.path.join(
      os.environ.get("DAGAN_SHARED") or os.path.join(os.path.dirname(REPO), "shared"),
      "fixtures", "audio2head_small")
  return os.path.join(folder, "fixture.npz")


def speak_inputs(frames: int = SPEAK_FRAMES, seq_len: int = 64):
  """``(image (256, 256, 3) float32 in [0, 1], blocks (seq_len, 4, 41)
  float32)``: the Audio2Head fixture's face and speech blocks (repeated to
  ``seq_len`` frames), else seeded random ones; the
  first ``frames`` blocks drive audio2pose, all ``seq_len`` one window."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  path = a2h_fixture_npz()
  if os.path.isfile(path):
    z = np.load(path)
    image = z["source/image_uint8"].astype(np.float32) / 255.0
    blocks = z["audio/blocks"].astype(np.float32)
  else:
    rng = np.random.default_rng(3)
    image = rng.random((256, 256, 3), np.float32)
    blocks = (rng.standard_normal((seq_len, 4, 41)) * 5).astype(np.float32)
  n = max(seq_len, frames)
  if len(blocks) < n:   # a short fixture: its speech again
    blocks = np.concatenate([blocks] * -(-n // len(blocks)))
  return image, blocks[:n]


def speak_samples():
  """The Audio2Head fixture's sentence (16 kHz int16), or None without it."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  path = a2h_fixture_npz()
  if not os.path.isfile(path):
    return None
  return np.load(path)["audio/wav_int16"]


def _import_official_a2h(official_dir: str) -> Any:
  """torch with the Audio2Head checkout on the path and the CPU patches of
  the fixture maker (``runtime_shims`` of its meta.json): ``.cuda()`` is a
  no-op and numpy's removed ``np.float`` alias is back (``inference.
  draw_annotation_box`` uses it). Torch uses 2 threads."""
  sys.path.insert(0, official_dir)
  os.chdir(official_dir)
  import numpy as np  # pylint: disable=import-outside-toplevel
  if not hasattr(np, "float"):
    np.float = float  # type: ignore[attr-defined]
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(2)
  torch.nn.Module.cuda = lambda self, *a, **kw: self
  torch.Tensor.cuda = lambda self, *a, **kw: self
  return torch


def official_speak_worker(official_dir: str, grad: bool = True) -> None:
  """The official ``inference.audio2head`` loop's work for SPEAK_FRAMES
  output frames in steady state (see :func:`ours_speak_worker` for ours)."""
  import contextlib  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel
  torch = _import_official_a2h(official_dir)
  import yaml  # pylint: disable=import-outside-toplevel
  import inference  # pylint: disable=import-outside-toplevel,import-error
  from modules.audio2kp import AudioModel3D  # pylint: disable=import-outside-toplevel,import-error
  from modules.audio2pose import audio2poseLSTM  # pylint: disable=import-outside-toplevel,import-error
  from modules.generator import OcclusionAwareGenerator  # pylint: disable=import-outside-toplevel,import-error
  from modules.keypoint_detector import KPDetector  # pylint: disable=import-outside-toplevel,import-error
  with open("config/vox-256.yaml") as f:
    mp = yaml.safe_load(f)["model_params"]
  with open("config/parameters.yaml") as f:
    opt = argparse.Namespace(**yaml.safe_load(f))
  torch.manual_seed(0)
  pose_net = audio2poseLSTM()
  kp_detector = KPDetector(**mp["kp_detector_params"], **mp["common_params"])
  generator = OcclusionAwareGenerator(**mp["generator_params"], **mp["common_params"])
  audio2kp = AudioModel3D(opt)
  for m in (pose_net, kp_detector, generator, audio2kp):
    m.eval()
  image, blocks = speak_inputs(SPEAK_FRAMES, opt.seq_len)
  img = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
  # audio2pose's de-normalisation range (get_pose_from_audio's constants).
  low = np.array([-0.639, -0.501, -0.47, -102.6, -32.5, 184.6], np.float32)
  high = np.array([0.411, 0.547, 0.433, 159.1, 116.5, 376.5], np.float32)
  first, last = opt.seq_len // 4, opt.seq_len // 4 * 3   # a later window's slots

  def step() -> float:
    # inference.py runs every network with autograd on (no torch.no_grad);
    # ``grad=False`` measures the official code's best case as well.
    with contextlib.nullcontext() if grad else torch.no_grad():
      # audio2pose on this step's frames (get_pose_from_audio's forward).
      audio = torch.from_numpy(blocks[None, :SPEAK_FRAMES].copy())
      poses = pose_net({"img": img, "audio": audio}).cpu().data.numpy()[0]
      poses = (poses + 1) / 2 * (high - low) + low
      # One window: seq_len boxes drawn, then audio2kp and kp_detector(img),
      # as the loop body over windows.
      boxes = []
      for j in range(opt.seq_len):
        canvas = np.zeros([256, 256])
        row = poses[min(j, len(poses) - 1)]
        inference.draw_annotation_box(canvas, np.array(row[:3]), np.array(row[3:]))
        boxes.append(canvas)
      window = {"audio": torch.from_numpy(blocks[None, :opt.seq_len].copy()),
                "pose": torch.from_numpy(np.array([boxes], dtype=np.float32)),
                "id_img": img}
      kp_source = kp_detector(img)
      kp = audio2kp(window)
      # The window's SPEAK_FRAMES frames: the generator re-encodes the
      # source every frame, as the official loop.
      total = 0.0
      for f in range(first, last):
        driving = {"value": kp["value"][:, f], "jacobian": kp["jacobian"][:, f]}
        out = generator(img, kp_source=kp_source, kp_driving=driving)
        frame = (np.transpose(out["prediction"].data.cpu().numpy(),
                              [0, 2, 3, 1])[0] * 255).astype(np.uint8)
        total += float(frame.mean())
    return total / (last - first)

  _serve(step)


def ours_speak_worker(kernels: str = "auto", batch: int | None = None) -> None:
  """Ours, the same work as :func:`official_speak_worker` through
  :class:`dagan_jax.inference.speak.Speaker` (batch ``batch`` frames per
  render call; its default when None)."""
  sys.path.insert(0, REPO)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from benchmarks import run  # pylint: disable=import-outside-toplevel
  from dagan_jax.face.pose_boxes import pose_boxes  # pylint: disable=import-outside-toplevel
  from dagan_jax.inference.speak import Speaker  # pylint: disable=import-outside-toplevel
  from dagan_jax.models import build  # pylint: disable=import-outside-toplevel
  cfg = run.speak_config("audio2head", kernels)
  models = build.build_models(cfg)
  variables = build.init_variables(models, jax.random.key(0), names=run.SPEAK_NETWORKS)
  speaker = Speaker(cfg, variables, **({"batch_size": batch} if batch else {}))
  image, blocks = speak_inputs(SPEAK_FRAMES, speaker.seq_len)
  frames_blocks = blocks[:SPEAK_FRAMES]

  def one() -> float:
    poses = speaker.poses(image, frames_blocks)          # SPEAK_FRAMES + 1 rows
    boxes = pose_boxes(poses[:, :3], poses[:, 3:])
    # SPEAK_FRAMES frames need one window (slots past them zero-padded:
    # the same work as a full window).
    value, jac = speaker.keypoints(image, frames_blocks, boxes)
    frames = speaker.render(image, value, jac)          # source encoded once a call
    return float((frames * 255).astype(np.uint8).mean())

  one()   # compile every function before "ready"
  _serve(one)


def ours_train_worker(layers: int, batch: int, kernels: str = "auto") -> None:
  sys.path.insert(0, REPO)
  import jax  # pylint: disable=import-outside-toplevel

  from benchmarks import run  # pylint: disable=import-outside-toplevel
  _, _, step, (state, data, frozen, key) = run.training_inputs(
      "dagan256", batch, {"model_params.depth_params.num_layers": layers,
                          "compute.kernels": kernels})
  compiled = step.lower(state, data, frozen, key).compile()
  holder = {"state": state, "i": 0}

  def one() -> float:
    holder["state"], metrics = compiled(holder["state"], data, frozen,
                                        jax.random.fold_in(key, holder["i"]))
    holder["i"] += 1
    return float(metrics["generator_total"])

  _serve(one)


def ours_animate_worker(kernels: str = "auto") -> None:
  sys.path.insert(0, REPO)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from benchmarks import run  # pylint: disable=import-outside-toplevel
  an, args, _ = run.inference_inputs("dagan256", 1, kernels=kernels)
  compiled = an.compiled.drive_fn.lower(*args).compile()

  def one() -> float:
    return float(np.asarray(jax.block_until_ready(compiled(*args))["prediction"]).mean())

  _serve(one)


# --------------------------------------------------------------------------
# The driver

def worker_command(kind: str, arg: str | None, official_dir: str | None,
                   repo: str | None = None) -> list[str]:
  """The command line of one contender's worker process (``repo``: run the
  worker of another checkout of this repository)."""
  if kind not in KINDS:
    raise ValueError(f"unknown contender kind {kind!r}; expected one of {KINDS}")
  if kind.startswith("official") and not official_dir:
    checkout = ("wangsuzhen/Audio2Head" if kind == "official-speak"
                else "harlanhong/CVPR2022-DaGAN")
    raise ValueError(f"{kind} needs --official-dir (a checkout of {checkout})")
  if kind == "official-speak" and arg not in (None, "grad", "nograd"):
    raise ValueError(f"official-speak:{arg}: expected official-speak[:grad|:nograd]")
  if kind == "ours-speak" and arg:
    kernels, _, batch = arg.partition("/")
    if kernels not in ("",) + config_lib.KERNEL_CHOICES or (batch and not (
        batch.isdigit() and int(batch) > 0)):
      raise ValueError(f"ours-speak:{arg}: expected ours-speak[:KERNELS[/BATCH]] "
                       f"with KERNELS one of {config_lib.KERNEL_CHOICES} and "
                       "BATCH a positive integer")
  script = (os.path.join(os.path.abspath(repo), "benchmarks", "official_ab.py")
            if repo else os.path.abspath(__file__))
  if not os.path.isfile(script):
    raise ValueError(f"--repo {repo}: no benchmarks/official_ab.py there")
  cmd = [sys.executable, script, "--worker", kind]
  if arg:
    cmd += ["--worker-arg", arg]
  if official_dir:
    cmd += ["--official-dir", os.path.abspath(official_dir)]
  return cmd


def alternate(commands: dict[str, Sequence[str]], rounds: int, *,
              warmup: int = 1, log=print,
              envs: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
  """Starts every worker (one at a time, so no two build or compile at
  once; ``envs[name]`` added to its environment), warms each up, then runs
  ``rounds`` rounds of one step per worker, the order reversed every other
  round. Returns per-worker times, medians and, for every pair, the median
  of the per-round time ratios, and the load average before each step."""
  procs: dict[str, subprocess.Popen] = {}
  envs = envs or {}
  try:
    for name, cmd in commands.items():
      env = {**os.environ, **envs[name]} if envs.get(name) else None
      p = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True, env=env)
      procs[name] = p
      line = p.stdout.readline()
      while line and line.strip() != "ready":
        line = p.stdout.readline()
      if not line:
        raise RuntimeError(f"worker {name!r} ({' '.join(cmd)}) exited before "
                           f"it was ready (exit code {p.wait()})")

    def one(name: str) -> float:
      p = procs[name]
      p.stdin.write("step\n")
      p.stdin.flush()
      line = p.stdout.readline()
      if not line:
        raise RuntimeError(f"worker {name!r} exited during a step "
                           f"(exit code {p.wait()})")
      return float(line.split()[0])

    for name in procs:
      for _ in range(warmup):
        one(name)
    times: dict[str, list[float]] = {n: [] for n in procs}
    loads: dict[str, list[float]] = {n: [] for n in procs}
    for r in range(rounds):
      order = list(procs) if r % 2 == 0 else list(reversed(list(procs)))
      for name in order:
        load = os.getloadavg()[0]
        loads[name].append(round(load, 2))
        times[name].append(one(name))
        log(f"round {r} {name}: {times[name][-1]:.3f} s (load {load:.2f})")
  finally:
    for p in procs.values():
      if p.poll() is None:
        try:
          p.stdin.write("quit\n")
          p.stdin.flush()
          p.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
          p.kill()
  names = list(times)
  ratios = {f"{a}/{b}": statistics.median(x / y for x, y in zip(times[a], times[b]))
            for a in names for b in names if a != b}
  return {"times_s": times,
          "median_s": {n: statistics.median(v) for n, v in times.items()},
          "min_s": {n: min(v) for n, v in times.items()},
          "median_ratio": ratios, "rounds": rounds,
          # the machine's 1-minute load average before each step: shared
          # machines slow the two codes by different factors
          "load_before": loads}


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("contenders", nargs="*", help="NAME=KIND[:ARG] (see the module doc)")
  parser.add_argument("--official-dir", default=None)
  parser.add_argument("--rounds", type=int, default=8)
  parser.add_argument("--repo", action="append", default=[], metavar="NAME=DIR",
                      help="run contender NAME's worker from the checkout DIR")
  parser.add_argument("--json", default=None, help="write the results here")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--worker-arg", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    if args.worker == "official-train":
      official_train_worker(args.official_dir, int(args.worker_arg or 50), 2)
    elif args.worker == "ours-train":
      layers, _, kernels = (args.worker_arg or "18").partition("/")
      ours_train_worker(int(layers), 2, kernels or "auto")
    elif args.worker == "official-animate":
      official_animate_worker(args.official_dir)
    elif args.worker == "ours-animate":
      ours_animate_worker(args.worker_arg or "auto")
    elif args.worker == "official-speak":
      if args.worker_arg not in (None, "grad", "nograd"):
        parser.error(f"official-speak:{args.worker_arg}: expected grad or nograd")
      official_speak_worker(args.official_dir, grad=args.worker_arg != "nograd")
    elif args.worker == "ours-speak":
      kernels, _, batch = (args.worker_arg or "auto").partition("/")
      ours_speak_worker(kernels or "auto", int(batch) if batch else None)
    else:
      parser.error(f"unknown worker {args.worker!r}")
    return 0
  if len(args.contenders) < 2:
    parser.error("give at least two contenders, e.g. off=official-train:50 ours=ours-train:50")
  commands, contenders, envs, allocators = {}, {}, {}, {}
  repos = dict(r.partition("=")[::2] for r in args.repo)
  for spec in args.contenders:
    name, _, kind_spec = spec.partition("=")
    contenders[name] = kind_spec
    kind_spec, *settings = kind_spec.split(",")
    kind_spec, _, alloc = kind_spec.partition("@")
    kind, _, arg = kind_spec.partition(":")
    if not name or not kind:
      parser.error(f"contender {spec!r}: expected NAME=KIND[:ARG][@ALLOCATOR][,VAR=VALUE...]")
    try:
      commands[name] = worker_command(kind, arg or None, args.official_dir,
                                      repos.get(name))
      allocators[name], envs[name] = allocator.allocator_env(choice=alloc or "system")
    except ValueError as err:  # AllocatorError is one
      parser.error(f"contender {spec!r}: {err}")
    for setting in settings:
      var, eq, value = setting.partition("=")
      if not eq or not var.isidentifier():
        parser.error(f"contender {spec!r}: {setting!r} is not VAR=VALUE")
      envs[name][var] = value
  result = alternate(commands, args.rounds, envs=envs)
  result["contenders"] = contenders
  result["repos"] = {name: os.path.abspath(d) for name, d in repos.items()}
  result["allocators"] = allocators
  result["frames_per_step"] = {
      name: SPEAK_FRAMES for name, spec in contenders.items()
      if spec.split(",")[0].split("@")[0].split(":")[0] in SPEAK_KINDS}
  for name in result["median_s"]:
    per = result["frames_per_step"].get(name)
    frames = (f" = {result['median_s'][name] / per:.3f} s/frame, "
              f"{per / result['median_s'][name]:.3g} frames/s" if per else "")
    print(f"{name}: median {result['median_s'][name]:.3f} s{frames}, best "
          f"{result['min_s'][name]:.3f} s (allocator: {allocators[name]})")
  for pair, ratio in result["median_ratio"].items():
    print(f"{pair}: median per-round ratio {ratio:.3f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
