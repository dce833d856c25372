r"""DaGAN++'s uncertainty-aware face depth network (FDN++), VoxCeleb 256x256.

As configs/vox256_depth.py plus the third head of the pose network: a stack
of up-blocks and a sigmoid giving a per-pixel uncertainty U (Eq. 8) that
divides the auto-masked photometric error and is regularised by log U
(Eq. 7); the photometric error is Eq. 5 as printed (alpha 0.8, 1 - SSIM).
lambda_1..3 are not given in the paper: 1, 1e-3 (halved per scale), 1.

Command:

  dagan-jax train --config configs/vox256_depth_pp.py --workdir runs/vox256_depth_pp \
      --config.dataset_params.root_dir=/data/vox

The run writes runs/vox256_depth_pp/model (depth + pose networks; the
uncertainty head stays in the training checkpoints) for the DaGAN++ configs.

Expect: the uncertainty term (mean log U over kept pixels, negative) falls
while U rises on non-rigid regions (mouth, eyes) and falls on the rigid face
(DaGAN++ Fig. 10); see the uncertainty column of the TensorBoard images.
"""

from dagan_jax import config as config_lib


def get_config():
  d = config_lib.depth_config()
  d["name"] = "vox256_depth_pp"
  d["dataset_params"]["root_dir"] = "/data/vox"
  d["model_params"]["depth_params"] = {"num_layers": 18, "scales": [0, 1, 2, 3],
                                       "uncertainty": True}
  d["train_params"].update({"ssim_alpha": 0.8, "ssim_halved": False})
  return config_lib.from_dict(d)
