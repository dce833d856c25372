"""Face-Depth-Network's pose network: checkpoint layout and outputs vs torch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dagan_jax.config import default_config
from dagan_jax.convert import dagan
from dagan_jax.convert.torch_to_flax import expected_torch_keys
from dagan_jax.models import build
from dagan_jax.models.pose import PoseDecoder

torch = pytest.importorskip("torch")
F = torch.nn.functional


class RefPoseDecoder(torch.nn.Module):
  """Written from the released layout: ModuleList ``net`` = squeeze, pose 0-2,
  focal, offset; intrinsics scaled by (width, height)."""

  def __init__(self, c_enc, frames=2, size=(96, 128)):
    super().__init__()
    self.frames, self.size = frames, size
    self.net = torch.nn.ModuleList([
        torch.nn.Conv2d(c_enc, 256, 1), torch.nn.Conv2d(256, 256, 3, 1, 1),
        torch.nn.Conv2d(256, 256, 3, 1, 1), torch.nn.Conv2d(256, 6 * frames, 1),
        torch.nn.Conv2d(256, 2, 3, 1, 1), torch.nn.Conv2d(256, 2, 3, 1, 1)])

  def forward(self, last):
    f = F.relu(self.net[0](last))
    f = F.relu(self.net[2](F.relu(self.net[1](f))))
    out = 0.01 * self.net[3](f).mean(3).mean(2).view(-1, self.frames, 1, 6)
    wh = torch.tensor([self.size[1], self.size[0]], dtype=torch.float32)
    focal = F.softplus(self.net[4](f)).mean(3).mean(2) * wh
    centre = (F.softplus(self.net[5](f)).mean(3).mean(2) + 0.5) * wh
    k = torch.zeros(last.shape[0], 3, 3)
    k[:, 0, 0], k[:, 1, 1] = focal[:, 0], focal[:, 1]
    k[:, 0, 2], k[:, 1, 2] = centre[:, 0], centre[:, 1]
    k[:, 2, 2] = 1
    return out[..., :3], out[..., 3:], k


def test_pose_decoder_matches_torch_reference():
  torch.manual_seed(0)
  ref = RefPoseDecoder(64)
  last = torch.randn(2, 64, 3, 4)
  with torch.no_grad():
    aa, tr, k = ref(last)
  feats = [[jnp.zeros((2, 1, 1, 1))] * 4 + [jnp.asarray(last.numpy().transpose(0, 2, 3, 1))]]
  module = PoseDecoder(num_ch_enc=(64,) * 5, image_size=(96, 128))
  abstract = jax.eval_shape(module.init, jax.random.key(0), feats)
  expected = expected_torch_keys(abstract)
  assert sorted(expected) == sorted(ref.state_dict())
  from dagan_jax.convert.torch_to_flax import match_state_dict
  sd = {k_: v.numpy() for k_, v in ref.state_dict().items()}
  variables, report = match_state_dict(sd, abstract, network="pose", source="ref")
  assert report.ok, report.format()
  out = module.apply(variables, feats)
  np.testing.assert_allclose(out["axisangle"], aa.numpy(), atol=1e-6)
  np.testing.assert_allclose(out["translation"], tr.numpy(), atol=1e-6)
  np.testing.assert_allclose(out["K"], k.numpy(), rtol=1e-5)


def test_pose_checkpoint_layout_converts():
  models = build.build_models(default_config(), with_pose=True)
  abstract = build.abstract_variables(models, ("pose_encoder", "pose_decoder"))
  enc = {k: np.zeros(v.torch_shape, np.float32)
         for k, v in expected_torch_keys(abstract["pose_encoder"]).items()}
  assert enc["encoder.conv1.weight"].shape == (64, 6, 7, 7)
  enc["encoder.fc.weight"] = np.zeros((1000, 512), np.float32)
  dec = {k: np.zeros(v.torch_shape, np.float32)
         for k, v in expected_torch_keys(abstract["pose_decoder"]).items()}
  assert sorted(dec) == sorted(f"net.{i}.{p}" for i in range(6)
                               for p in ("weight", "bias"))
  variables, _ = dagan.convert_pose(enc, dec, models, num_layers=18)
  assert set(variables) == {"pose_encoder", "pose_decoder"}
