r"""DaGAN++ on HDTF at 512x512, and every model of its ablation (Table V).

`configs/hdtf512_daganpp.py:VARIANT` selects a Table V row:

  baseline  no depth at all (keypoints on RGB, plain warped-feature skips)
  fdn       + DaGAN's depth for the keypoints          fdn++   with FDN++ depth
  cam       + attention at the lowest scale (DaGAN's)   cam++   with FDN++ depth
  gmg       + attention at every scale (multi-layer)
  dagan     DaGAN itself (CVPR 2022)
  daganpp   DaGAN++ (default): FDN++ keypoints + multi-layer attention

HDTF frames are 512x512 frame folders (HDTF layout: <Name>.mp4/<6-digit>.jpg);
the keypoint detector and dense motion run at 128x128 (scale 0.25).

Command (depth network from configs/vox256_depth_pp.py, or FDN for the
fdn/cam/dagan rows from configs/vox256_depth.py, trained at 512 with
--config.dataset_params.frame_shape='[512, 512, 3]'):

  dagan-jax train --config configs/hdtf512_daganpp.py:daganpp \
      --workdir runs/hdtf512_daganpp \
      --config.dataset_params.root_dir=/data/hdtf \
      --config.train_params.depth_checkpoint=runs/hdtf512_depth_pp \
      --config.train_params.vgg19_weights=/weights/vgg19.pth

Expect (Table V, HDTF; SSIM %, PSNR, LPIPS, L1): baseline 81.0 / 31.30 /
0.145 / 0.0317 ... DaGAN++ 86.7 / 33.51 / 0.109 / 0.0239; the row's own
figures are in dagan_jax.models.variants.VARIANTS[VARIANT].paper_hdtf.
"""

from dagan_jax import config as config_lib
from dagan_jax.models import variants


def get_config(arg=None):
  variant = (arg or "daganpp").strip()
  d = config_lib.talking_head_config()
  d["name"] = f"hdtf512_{variant}"
  d["dataset_params"].update({"root_dir": "/data/hdtf", "layout": "hdtf",
                              "frame_shape": [512, 512, 3], "id_sampling": False})
  d["model_params"] = variants.daganpp_model_params(variant, d["model_params"])
  d["train_params"]["eval_every"] = 5000
  return config_lib.from_dict(d)
