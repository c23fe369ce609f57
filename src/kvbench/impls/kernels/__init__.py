"""kvbench's own Triton kernels, one module per op."""
