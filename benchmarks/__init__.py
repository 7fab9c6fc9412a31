"""Measurements of the library on a machine, run from the clone (not installed with ``idnhelpers``):
``speed`` (``make bench``: the paper's MNIST protocol written as the official code does it, against the
engine), ``bf16`` (bf16 autocast against fp32, beside seed-to-seed noise) and ``gpu_check``
(``make gpu-check``: every CUDA path once)."""
