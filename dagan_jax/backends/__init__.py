"""Kernel sets for :mod:`dagan_jax.compute`, one module per backend.

* :mod:`dagan_jax.backends.xla`: the plain program (``lax`` convolutions,
  ``jnp`` sums); what runs on GPUs and TPUs, and on CPU with
  ``compute.kernels='xla'``.
* :mod:`dagan_jax.backends.xla_cpu`: convolution forms and staged sums
  measured to pay off on XLA:CPU, with its compile options; what
  ``compute.kernels='auto'`` picks on the CPU backend.

Models, losses and training steps never import these modules: they call
:mod:`dagan_jax.compute`, which dispatches to the set that is in use. Every
kernel set provides the same functions with the same meaning (results equal
up to float rounding): ``conv2d``, ``block_sum``, ``block_broadcast``,
``materialize`` and ``compiler_options``.
"""
