r"""DaGAN's face depth network (FDN), self-supervised on VoxCeleb at 256x256.

Face-Depth-Network / monodepth2: ResNet-18 depth encoder + decoder (disp at 4
scales), a pose network on (target, source) pairs predicting [R|t] and the
camera intrinsics K (learned per pair: no camera parameters), frames
(t, t-1, t+1), SSIM+L1 photometric error (alpha 0.85) with the per-pixel
minimum over sources and auto-masking of stationary pixels, edge-aware
smoothness 1e-3 halved per scale; Adam 1e-4, decayed x0.1 after 15 of 20
epochs, batch 12.

Command:

  dagan-jax train --config configs/vox256_depth.py --workdir runs/vox256_depth \
      --config.dataset_params.root_dir=/data/vox

The run writes runs/vox256_depth/model (a model directory with the depth and
pose networks) that the talking-head configs load with
--config.train_params.depth_checkpoint=runs/vox256_depth.

Expect: the photometric term falls steadily while the auto-mask keeps mostly
the moving face pixels (its kept fraction is logged). There is no ground
truth: judge the disparity maps in TensorBoard (face nearer, i.e. brighter,
than the background; smooth; the nose nearest).
"""

from dagan_jax import config as config_lib


def get_config():
  d = config_lib.depth_config()
  d["name"] = "vox256_depth"
  d["dataset_params"]["root_dir"] = "/data/vox"
  d["model_params"]["depth_params"] = {"num_layers": 18, "scales": [0, 1, 2, 3],
                                       "uncertainty": False}
  return config_lib.from_dict(d)
