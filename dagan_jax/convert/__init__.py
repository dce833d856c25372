"""Official PyTorch checkpoints -> Flax variables (torch imported only here).

* ``torch_to_flax``: the generic, named rename/transpose rules and the strict
  matcher that names every missing / unexpected / mis-shaped key.
* ``dagan``: the official files (DaGAN .pth.tar, monodepth2 encoder/decoder,
  Face-Depth-Network pose nets, torchvision VGG19) with diagnoses of common
  mistakes.
* ``cli_convert``: the ``dagan-jax convert`` command.
"""
