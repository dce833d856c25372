"""Pure-jnp operations with no parameters (NHWC, (x, y) in [-1, 1], pull warps).

Everything here is jit-compatible and differentiable; see each module's
docstring for the exact conventions:

* ``grid``: FOMM coordinate grid.
* ``sampling``: ``grid_sample`` (torch's bilinear grid_sample), resizes.
"""

from dagan_jax.ops.grid import make_coordinate_grid
from dagan_jax.ops.sampling import grid_sample, resize_bilinear, resize_nearest

__all__ = [
    'make_coordinate_grid',
    'grid_sample',
    'resize_bilinear',
    'resize_nearest',
]
