r"""DaGAN++ (TPAMI 2023) on VoxCeleb at 256x256.

15 keypoints on RGB + FDN++ depth; the geometry-enhanced multi-layer
generator (3 down-blocks: cross-modal attention between the warped,
occlusion-masked appearance features and the source-depth features at every
scale, 256x256 down to 32x32, Eq. 12-13, memory-linear blockwise attention);
6 ResBlocks; losses as DaGAN (Eq. 14-17, lambda_P = lambda_E = lambda_D =
10). Train configs/vox256_depth_pp.py first.

Command:

  dagan-jax train --config configs/vox256_daganpp.py --workdir runs/vox256_daganpp \
      --config.dataset_params.root_dir=/data/vox \
      --config.train_params.depth_checkpoint=runs/vox256_depth_pp \
      --config.train_params.vgg19_weights=/weights/vgg19.pth

Expect: the paper's VoxCeleb1 self-reenactment numbers (Table I): SSIM 82.6%,
PSNR 31.94, LPIPS 0.175, L1 0.0332, AKD 1.226, AED 0.115. Memory per sample
of one training step is printed by `dagan-jax info --config
configs/vox256_daganpp.py --memory` (the attention never materialises the
65536 x 65536 matrix of the 256x256 level).
"""

from dagan_jax import config as config_lib
from dagan_jax.models import variants


def get_config():
  d = config_lib.talking_head_config()
  d["name"] = "vox256_daganpp"
  d["dataset_params"]["root_dir"] = "/data/vox"
  d["model_params"] = variants.daganpp_model_params("daganpp", d["model_params"])
  d["train_params"]["eval_every"] = 5000
  return config_lib.from_dict(d)
