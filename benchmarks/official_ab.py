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

* ``official-dub[:noloss]`` -- the official IP_LAP inference
  (``inference_single.py``'s loop over windows) for ``DUB_FRAMES`` = 5
  output frames, see below; ``:noloss`` drops the perceptual losses its
  renderer computes in every forward (the official code's best case).
* ``ours-dub[:KERNELS[/BATCH]]`` -- ours, the same work through
  :class:`dagan_jax.inference.dub.Dubber` (render batch ``BATCH``, default
  5: the step's frames in one call), released sizes
  (:func:`dagan_jax.config.ip_lap_config`), random weights.

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

**The dub step, and why it is the fair unit.** The official loop makes
one output frame per window ``b`` of ``T`` = 5 frames ``b .. b + 4``: the
landmark generator on the window (its mel chunks ``max(0, j - 2)``, the
frames' pose landmarks, sorted on the way as the loop does, and the 15
reference landmark sets), the 5 frames' sketches drawn with its
``draw_landmarks``, then one renderer call on the centre frame's masked
face, the 5 sketches, the N = 25 reference faces with their sketches and
the centre mel chunk (the flow network warps all 25 references: most of
a frame's time), the face quantised to uint8, resized and
pasted into its template frame, and the pasted frame blended back through
the face contour. Every output frame is the same work, so the step is
any run of frames; it is ``DUB_FRAMES`` = 5 consecutive windows (from
window 20, the fixture's), which lets ours batch what the official code
runs one at a time -- ours: the 5 windows' landmarks in one call, the
sketches drawn on the host, the 5 faces rendered ``BATCH`` per call with
the references sent to the device once per call, each pasted back; the
same arithmetic, every frame made.

* Both sides read the same inputs (:func:`dub_inputs`): the IP_LAP
  fixture's real template (IP_LAP's own test clip, 100 frames, 256x256),
  its MediaPipe face points, crop boxes and reference frames, and the
  official mel chunks of its speech. The face mesh, the mel, the crops,
  landmark normalisation and the choice and drawing of the references run
  once per video and are not in the step on either side.
* Not in the step on either side: the side-by-side panel and the video
  writer (the official loop writes sketch | frame; ours writes frames
  only). The official paste-back runs face_alignment (S3FD + FAN, not
  installed here) on every frame for a 68-point contour; its worker uses
  the template's own face outline instead (the 45 oval and eyebrow points
  of the fixture's mesh, as ours), so the official side is charged less
  than its real loop.
* The official renderer's ``forward`` also computes its two perceptual
  losses (VGG19 on the generated face, the warped reference and the
  target, at two scales; unused at inference): that is the released
  inference, so it is in the official step; ``official-dub:noloss`` times
  it without them.

The official networks are built unmodified at the released sizes
(``Landmark_generator(T=5, d_model=512, nlayers=4, nhead=4,
dim_feedforward=1024, dropout=0.1)``, ``Renderer()``) with torch's
default random initialisation, in eval mode, under ``torch.no_grad`` as
the script, torch on 2 threads. Its modules import packages inference
does not use; missing ones are stubbed (``lws``, ``librosa``,
``mediapipe``'s ``landmark_pb2``) and torchvision's VGG19 is
:func:`vgg19_stand_in` (the same layers, random weights) when torchvision
is not installed. ``inference_single.py`` itself cannot be imported (it
is a script that runs the whole inference at import): its worker runs the
official modules (``models``, ``draw_landmark``) in the script's loop body,
step by step, reading ``ori_sequence_idx`` from the script's text.
Seconds are per step: divide by 5 for seconds per frame (the driver
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
pyworld, scipy, scikit-image, opencv, imageio); the dub worker one of
Weizhi-Zhong/IP_LAP (Apache-2.0), ``torch``, ``opencv``, ``scipy`` and
``tqdm`` (its stubs above for the rest). They run the official
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
    python benchmarks/official_ab.py --official-dir /tmp/iplap_official \
        --rounds 3 off=official-dub ours=ours-dub
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
         "official-speak", "ours-speak", "official-dub", "ours-dub")
#: Contenders whose step makes SPEAK_FRAMES video frames.
SPEAK_KINDS = ("official-speak", "ours-speak")
#: Contenders whose step makes DUB_FRAMES video frames.
DUB_KINDS = ("official-dub", "ours-dub")


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


# --------------------------------------------------------------------------
# IP_LAP: visual dubbing (template video + speech -> dubbed video)

#: Output frames in one dub step: one landmark-generator window each, the
#: windows that start at :data:`DUB_FIRST_WINDOW` (the fixture's window k).
DUB_FRAMES = 5
DUB_FIRST_WINDOW = 20
#: The fixture's template clip (IP_LAP's own test/template_video/129.mp4 as
#: ``shared/data/vox_mini`` stores it: a folder of 100 PNG frames, 256x256).
IPLAP_TEMPLATE = ("data", "vox_mini", "test", "id10009#iplap_129#000000#000100.mp4")


def _shared_folder() -> str:
  return os.environ.get("DAGAN_SHARED") or os.path.join(os.path.dirname(REPO), "shared")


def iplap_fixture_dir() -> str:
  """``$DAGAN_IPLAP_FIXTURE``, else ``fixtures/ip_lap_small`` under the
  shared folder (as the tests find it)."""
  return os.environ.get("DAGAN_IPLAP_FIXTURE") or os.path.join(
      _shared_folder(), "fixtures", "ip_lap_small")


def dub_inputs() -> dict[str, Any]:
  """What both dub workers read, from the IP_LAP fixture and its template
  clip: ``frames_bgr`` (L, H, W, 3) uint8 as cv2 reads them (the official
  inference reads its template with cv2), ``mesh131`` (L, 131, 2) the
  fixture's MediaPipe points (image-normalised, ``ori_sequence_idx``
  order), ``boxes`` (L, 4) its crop boxes ``(y1, y2, x1, x2)``,
  ``nl_refs`` (15,) and ``img_refs`` (25,) its reference frames, and
  ``mel_chunks`` (C, 80, 16) float32 the official mel chunks of its speech.
  Raises :class:`dagan_jax.errors.DataError` naming a missing file."""
  import glob  # pylint: disable=import-outside-toplevel

  import cv2  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from dagan_jax.errors import DataError  # pylint: disable=import-outside-toplevel
  npz = os.path.join(iplap_fixture_dir(), "fixture.npz")
  folder = os.path.join(_shared_folder(), *IPLAP_TEMPLATE)
  paths = sorted(glob.glob(os.path.join(folder, "*.png")))
  if not os.path.isfile(npz):
    raise DataError(f"{npz}: the IP_LAP fixture is missing (set DAGAN_IPLAP_FIXTURE)")
  if not paths:
    raise DataError(f"{folder}: no PNG frames (the IP_LAP fixture's template "
                    "clip; set DAGAN_SHARED)")
  z = np.load(npz)
  frames = np.stack([cv2.imread(p) for p in paths])
  if len(frames) != len(z["frames/mesh131"]):
    raise DataError(f"{folder}: {len(frames)} frames, but {npz} has face points "
                    f"for {len(z['frames/mesh131'])}")
  return {"frames_bgr": frames, "mesh131": z["frames/mesh131"].astype(np.float32),
          "boxes": z["frames/box_y1y2x1x2"].astype(np.int64),
          "nl_refs": z["frames/nl_ref_frames"].astype(np.int64),
          "img_refs": z["frames/ref_img_frames"].astype(np.int64),
          "mel_chunks": z["audio/mel_chunks"].astype(np.float32)}


def _module_or_stub(name: str) -> None:
  """Imports ``name`` (and its parents), or puts empty modules in their
  place when it is not installed."""
  import importlib  # pylint: disable=import-outside-toplevel
  try:
    importlib.import_module(name)
  except ImportError:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
      full = ".".join(parts[:i])
      if full not in sys.modules:
        sys.modules[full] = types.ModuleType(full)
      if i > 1:
        setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[full])


def vgg19_stand_in(torch) -> types.ModuleType:
  """A ``torchvision`` module whose ``models.vgg19(pretrained=...)`` is
  VGG19 with torch's default (random) initialisation: ``features``, the
  layer list torchvision builds (16 3x3 convs with ReLUs, 5 max pools; 37
  modules, the indices the official ``_vgg19`` names), so the same
  convolutions run as with the ImageNet weights."""
  nn = torch.nn
  widths = (64, 64, "pool", 128, 128, "pool", 256, 256, 256, 256, "pool",
            512, 512, 512, 512, "pool", 512, 512, 512, 512, "pool")

  def vgg19(pretrained: bool = False, **kwargs):
    del pretrained, kwargs
    layers, channels = [], 3
    for w in widths:
      if w == "pool":
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
      else:
        layers += [nn.Conv2d(channels, w, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        channels = w
    net = nn.Module()
    net.features = nn.Sequential(*layers)
    return net

  tv = types.ModuleType("torchvision")
  tv.models = types.ModuleType("torchvision.models")
  tv.models.vgg19 = vgg19
  return tv


def _import_official_iplap(official_dir: str) -> Any:
  """torch with the IP_LAP checkout on the path; what its modules import
  but inference does not use is stubbed when missing: ``lws`` and
  ``librosa`` (``models/audio.py``: the mel is computed outside the step),
  ``mediapipe``'s ``landmark_pb2`` (imported, unused, by
  ``draw_landmark.py``), and torchvision's VGG19 (the renderer's perceptual
  loss; :func:`vgg19_stand_in` when torchvision is not installed, else
  built without downloading weights). ``.cuda()`` is a no-op
  (``Fusion_transformer_encoder`` calls it). Torch uses 2 threads."""
  sys.path.insert(0, official_dir)
  os.chdir(official_dir)
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(2)
  for name in ("lws", "librosa.filters", "mediapipe.framework.formats.landmark_pb2"):
    _module_or_stub(name)
  try:
    from torchvision import models  # pylint: disable=import-outside-toplevel
    vgg19 = models.vgg19
    models.vgg19 = lambda pretrained=False, **kw: vgg19(weights=None)
  except (ImportError, RuntimeError):
    tv = vgg19_stand_in(torch)
    sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, tv.models
  torch.nn.Module.cuda = lambda self, *a, **kw: self
  torch.Tensor.cuda = lambda self, *a, **kw: self
  return torch


def _official_sequence(official_dir: str) -> list[int]:
  """``ori_sequence_idx`` as ``inference_single.py`` writes it (a literal
  list; the script itself cannot be imported: it runs the whole inference)."""
  import ast  # pylint: disable=import-outside-toplevel
  with open(os.path.join(official_dir, "inference_single.py")) as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1
        and getattr(node.targets[0], "id", None) == "ori_sequence_idx"):
      return list(ast.literal_eval(node.value))
  raise ValueError(f"{official_dir}/inference_single.py: no ori_sequence_idx")


class _Landmark(dict):
  """A landmark ``draw_landmarks`` reads by attribute (``idx``, ``x``,
  ``y``), as the official script's ``LandmarkDict``."""

  def __getattr__(self, name):
    try:
      return self[name]
    except KeyError as err:
      raise AttributeError(name) from err


def official_dub_worker(official_dir: str, losses: bool = True) -> None:
  """The official ``inference_single.py`` loop body for DUB_FRAMES output
  frames in steady state (see :func:`ours_dub_worker` for ours).
  ``losses=False`` replaces the renderer's perceptual-loss module (which
  its ``forward`` runs at inference too) by one returning 0."""
  import cv2  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  torch = _import_official_iplap(official_dir)
  import draw_landmark  # pylint: disable=import-outside-toplevel,import-error
  from models import Landmark_generator, Renderer  # pylint: disable=import-outside-toplevel,import-error
  T, S = 5, 128  # noqa: N806  (the script's T and img_size)
  torch.manual_seed(0)
  landmark_net = Landmark_generator(T=T, d_model=512, nlayers=4, nhead=4,
                                    dim_feedforward=1024, dropout=0.1).eval()
  renderer = Renderer().eval()
  if not losses:
    class NoLoss(torch.nn.Module):
      def forward(self, *args, **kwargs):  # pylint: disable=unused-argument
        return torch.zeros(())
    renderer.perceptual = NoLoss()

  # -- Outside the step, once per video (the script's steps (1)-(3) and its
  # references), on the fixture's face points instead of MediaPipe.
  x = dub_inputs()
  frames, mesh = x["frames_bgr"], x["mesh131"]
  ori = _official_sequence(official_dir)
  pose_ids, content_ids = draw_landmark.pose_landmark_idx, draw_landmark.content_landmark_idx
  full_order = (sorted(ori.index(i) for i in pose_ids)
                + sorted(ori.index(i) for i in content_ids))
  spec = draw_landmark.DrawingSpec(thickness=1, circle_radius=1)
  crops, poses, contents, contours = [], [], [], []
  h, w = frames.shape[1:3]
  for f, (frame, box) in enumerate(zip(frames, x["boxes"])):
    y1, y2, x1, x2 = (int(v) for v in box)
    crops.append((frame[y1:y2, x1:x2], (y1, y2, x1, x2)))
    # The script's per-frame lists: (mesh id, x, y) normalised to the box,
    # in MediaPipe's point order.
    pts = {i: (w * float(p[0]), h * float(p[1])) for i, p in zip(ori, mesh[f])}
    norm = lambda i: [i, (pts[i][0] - x1) / (x2 - x1), (pts[i][1] - y1) / (y2 - y1)]  # noqa: E731
    poses.append([norm(i) for i in sorted(pose_ids)])
    contents.append([norm(i) for i in sorted(content_ids)])
    # The paste-back contour: the script asks face_alignment (S3FD + FAN)
    # for 68 points on every frame; that detector is not in the step, the
    # template's own face outline is (as ours).
    contours.append(cv2.convexHull((mesh[f][:45] * [w, h]).astype(np.int32)))
  order = lambda marks: sorted(marks, key=lambda m: ori.index(m[0]))  # noqa: E731
  xy = lambda marks: torch.FloatTensor([[m[1] for m in marks], [m[2] for m in marks]])  # noqa: E731

  def sketch(full, crop_hw):
    ch, cw = crop_hw
    canvas = np.zeros((int(ch * S / min(ch, cw)), int(cw * S / min(ch, cw)), 3))
    marks = [_Landmark(idx=ori[full_order[i]], x=full[0, i], y=full[1, i])
             for i in range(full.shape[1])]
    canvas = draw_landmark.draw_landmarks(canvas, marks, connections=draw_landmark.FACEMESH_FULL,
                                          connection_drawing_spec=spec)
    return cv2.resize(canvas, (S, S))

  nl_pose = torch.stack([xy(order(poses[i])) for i in x["nl_refs"]])[None]
  nl_content = torch.stack([xy(order(contents[i])) for i in x["nl_refs"]])[None]
  ref_full = torch.cat([torch.stack([xy(order(poses[i])) for i in x["img_refs"]]),
                        torch.stack([xy(order(contents[i])) for i in x["img_refs"]])],
                       dim=2).numpy()
  ref_sketches = torch.FloatTensor(np.asarray(
      [sketch(ref_full[k], crops[i][0].shape[:2]) for k, i in enumerate(x["img_refs"])])
      / 255.0).unsqueeze(0).permute(0, 1, 4, 2, 3)
  ref_imgs = torch.FloatTensor(np.asarray(
      [cv2.resize(crops[i][0].copy(), (S, S)) for i in x["img_refs"]])
      / 255.0).unsqueeze(0).permute(0, 1, 4, 2, 3)
  mel_chunks = list(x["mel_chunks"])
  length = len(frames)
  sequence = list(range(length)) + list(reversed(range(length)))
  sequence = sequence * ((len(mel_chunks) // length + 2) // 2)

  def one_window(start: int) -> np.ndarray:
    """The loop body for window ``start``: its output frame."""
    t_mels, t_faces, t_coords, t_poses, t_frames = [], [], [], [], []
    for j in range(start, start + T):
      t_mels.append(mel_chunks[max(0, j - 2)])
      f = int(sequence[j])
      face, coords = crops[f]
      t_faces.append(face)
      t_coords.append((coords, f))
      t_poses.append(poses[f])
      t_frames.append(frames[f].copy())
    mels = torch.FloatTensor(np.asarray(t_mels)).unsqueeze(1).unsqueeze(0)
    pose = torch.zeros((T, 2, 74))
    for i in range(T):
      pose[i] = xy(order(t_poses[i]))
    pose = pose.unsqueeze(0)
    with torch.no_grad():
      content = landmark_net(mels, pose, nl_pose, nl_content)        # (T, 2, 57)
    full = torch.cat([pose[0], content], dim=2).cpu().numpy()        # (T, 2, 131)
    targets = []
    for i in range(T):
      # (the script also resizes window frame 2's sketch for its side
      # panel here; the panel is not in the step)
      targets.append(torch.FloatTensor(sketch(full[i], t_faces[i].shape[:2])) / 255)
    targets = torch.stack(targets, dim=0).permute(0, 3, 1, 2).unsqueeze(0)
    face = torch.FloatTensor(cv2.resize(t_faces[2], (S, S)) / 255).permute(
        2, 0, 1).unsqueeze(0).unsqueeze(0)
    with torch.no_grad():
      generated = renderer(face, targets, ref_imgs, ref_sketches, mels[:, 2].unsqueeze(0))[0]
    gen = (generated.squeeze(0).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    (y1, y2, x1, x2), f = t_coords[2]
    background = t_frames[2].copy()
    t_frames[2][y1:y2, x1:x2] = cv2.resize(gen, (x2 - x1, y2 - y1))
    # merge_face_contour_only / swap_masked_region on that contour.
    mask = np.zeros((h, w, 1), np.uint8)
    cv2.fillConvexPoly(mask, contours[f], 255)
    mask = np.tile(np.expand_dims(cv2.GaussianBlur(mask, (21, 21), 11) / 255, 2), (1, 1, 3))
    return (t_frames[2] * mask + background * (1 - mask)).astype(np.uint8)

  def step() -> float:
    return float(np.mean([one_window(b).mean() for b in
                          range(DUB_FIRST_WINDOW, DUB_FIRST_WINDOW + DUB_FRAMES)]))

  _serve(step)


def ours_dub_setup(dubber) -> tuple[Any, Any, Any, Any]:
  """Ours outside the step, once per video: ``(template, mel chunks,
  references, plan of the step's DUB_FRAMES windows)`` from
  :func:`dub_inputs` (the template's faces from the fixture's points, no
  face mesh run; the official mel chunks)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from dagan_jax.inference import dub  # pylint: disable=import-outside-toplevel
  x = dub_inputs()
  template = dubber.template_from_frames(x["frames_bgr"][..., ::-1].copy(),
                                         mesh131=x["mesh131"], where="IP_LAP fixture")
  chunks = x["mel_chunks"]
  plan = dubber.plan(len(chunks), len(template))
  refs = dubber.references(template)
  w = slice(DUB_FIRST_WINDOW, DUB_FIRST_WINDOW + DUB_FRAMES)
  step_plan = dub.DubPlan(plan.mel_index[w], plan.frame_index[w],
                          np.arange(DUB_FRAMES), plan.centre)
  return template, chunks, refs, step_plan


def ours_dub_worker(kernels: str = "auto", batch: int | None = None) -> None:
  """Ours, the same work as :func:`official_dub_worker` through
  :class:`dagan_jax.inference.dub.Dubber` at the released sizes, random
  weights (``benchmarks/run.py``'s ``make_dubber('ip-lap')``): the step's
  windows in one landmark-generator call, its frames rendered ``batch``
  per call (default DUB_FRAMES: one call), pasted back."""
  sys.path.insert(0, REPO)
  from benchmarks import run  # pylint: disable=import-outside-toplevel
  dubber = run.make_dubber("ip-lap", batch or DUB_FRAMES, kernels)
  template, chunks, refs, plan = ours_dub_setup(dubber)

  def one() -> float:
    content = dubber.landmarks(template, chunks, plan, refs)
    faces, _ = dubber.render(template, chunks, plan, content, refs)
    return float(dubber.composite(template, plan, faces).mean())

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
    checkout = {"official-speak": "wangsuzhen/Audio2Head",
                "official-dub": "Weizhi-Zhong/IP_LAP"}.get(kind, "harlanhong/CVPR2022-DaGAN")
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
  if kind == "official-dub" and arg not in (None, "losses", "noloss"):
    raise ValueError(f"official-dub:{arg}: expected official-dub[:losses|:noloss]")
  if kind == "ours-dub" and arg:
    kernels, _, batch = arg.partition("/")
    if kernels not in ("",) + config_lib.KERNEL_CHOICES or (batch and not (
        batch.isdigit() and int(batch) > 0)):
      raise ValueError(f"ours-dub:{arg}: expected ours-dub[:KERNELS[/BATCH]] "
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
    elif args.worker == "official-dub":
      if args.worker_arg not in (None, "losses", "noloss"):
        parser.error(f"official-dub:{args.worker_arg}: expected losses or noloss")
      official_dub_worker(args.official_dir, losses=args.worker_arg != "noloss")
    elif args.worker == "ours-dub":
      kernels, _, batch = (args.worker_arg or "auto").partition("/")
      ours_dub_worker(kernels or "auto", int(batch) if batch else None)
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
  result["frames_per_step"].update({
      name: DUB_FRAMES for name, spec in contenders.items()
      if spec.split(",")[0].split("@")[0].split(":")[0] in DUB_KINDS})
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
