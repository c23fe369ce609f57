"""kvbench's own Triton kernels, one module per op: cache_write (kv), mla, indexer, token_head_quant."""
