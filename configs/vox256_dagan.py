r"""DaGAN (CVPR 2022) on VoxCeleb at 256x256: the official vox-adv-256 settings.

15 keypoints on RGB + depth, DepthAwareGenerator (depth-aware attention at the
64x64 bottleneck), multi-scale discriminator on keypoint heatmaps, VGG19
pyramid perceptual loss, equivariance and keypoint-distance losses; Adam
(0.5, 0.999) at 2e-4, batch 4, 150 epochs x 75 repeats. The face depth
network is trained first (configs/vox256_depth.py) and loaded frozen.

Command (VoxCeleb preprocessed by FOMM's video-preprocessing into
/data/vox/{train,test}, torchvision's vgg19 state_dict saved locally):

  dagan-jax train --config configs/vox256_dagan.py --workdir runs/vox256_dagan \
      --config.dataset_params.root_dir=/data/vox \
      --config.train_params.depth_checkpoint=runs/vox256_depth \
      --config.train_params.vgg19_weights=/weights/vgg19.pth

Expect: the published DaGAN numbers on VoxCeleb1 self-reenactment (DaGAN++
paper, Table I): SSIM 80.4%, PSNR 31.22, LPIPS 0.185, L1 0.0360, AKD 1.279,
AED 0.117 (the CVPR paper reports L1 0.0422 with its own protocol). Training
is long: the official code needs about 13-14 s per step at batch 2 on two CPU
cores; use accelerators (the step is data-parallel over every device of every
host; batch_size is global and must divide by the device count).
"""

from dagan_jax import config as config_lib


def get_config():
  d = config_lib.talking_head_config()
  d["name"] = "vox256_dagan"
  d["dataset_params"]["root_dir"] = "/data/vox"
  d["model_params"]["model"] = "dagan"
  d["model_params"]["generator_type"] = "DepthAwareGenerator"
  d["model_params"]["kp_detector_params"]["use_depth"] = True
  d["model_params"]["depth_params"] = {"num_layers": 18, "scales": [0, 1, 2, 3],
                                       "uncertainty": False}
  d["train_params"]["eval_every"] = 5000
  return config_lib.from_dict(d)
