"""Speed, memory and FLOP benchmarks of dagan_jax (``python benchmarks/run.py``)."""
