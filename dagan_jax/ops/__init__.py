"""Pure-jnp operations with no parameters (NHWC, (x, y) in [-1, 1], pull warps).

Everything here is jit-compatible and differentiable; see each module's
docstring for the exact conventions:

* ``grid``: FOMM coordinate grid.
* ``sampling``: ``grid_sample`` (torch's bilinear grid_sample), resizes.
* ``keypoints``: Gaussian heatmaps, soft-argmax keypoints and Jacobians,
  first-order sparse motions, relative motion transfer (``normalize_kp``).
* ``pyramid``: anti-aliased downsampling, image pyramid.
* ``tps``: random thin-plate-spline warps of the equivariance loss.
* ``camera``: rotations, poses, back-projection, projection, view synthesis
  for the self-supervised depth network.
"""

from dagan_jax.ops.camera import (backproject, disp_to_depth, inverse_warp,
                                  pixel_grid, project, rot_from_axisangle,
                                  transformation_from_parameters)
from dagan_jax.ops.grid import make_coordinate_grid
from dagan_jax.ops.keypoints import (convex_hull_area, heatmap_to_keypoints,
                                     inverse_2x2, jacobian_from_maps,
                                     kp_to_gaussian, movement_scale,
                                     normalize_kp, sparse_motions)
from dagan_jax.ops.pyramid import (anti_alias_downsample, anti_alias_kernel,
                                   image_pyramid)
from dagan_jax.ops.sampling import grid_sample, resize_bilinear, resize_nearest
from dagan_jax.ops.tps import (TPSParams, sample_tps, tps_jacobian,
                               warp_coordinates, warp_frame)
# ``dagan_jax.ops.attention`` stays the module (its function is
# ``ops.attention.attention``); the other forms are re-exported.
from dagan_jax.ops import attention
from dagan_jax.ops.attention import (attention_rows, blockwise_attention,
                                     naive_attention, xla_attention)

__all__ = [
    'make_coordinate_grid',
    'grid_sample',
    'resize_bilinear',
    'resize_nearest',
    'kp_to_gaussian',
    'heatmap_to_keypoints',
    'jacobian_from_maps',
    'inverse_2x2',
    'sparse_motions',
    'convex_hull_area',
    'movement_scale',
    'normalize_kp',
    'anti_alias_kernel',
    'anti_alias_downsample',
    'image_pyramid',
    'TPSParams',
    'sample_tps',
    'warp_coordinates',
    'tps_jacobian',
    'warp_frame',
    'rot_from_axisangle',
    'transformation_from_parameters',
    'disp_to_depth',
    'pixel_grid',
    'backproject',
    'project',
    'inverse_warp',
    'attention_rows',
    'blockwise_attention',
    'naive_attention',
    'xla_attention',
]
