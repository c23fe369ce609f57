"""kvbench's asv side: what the benchmark classes use, result files, the machine file, vLLM's history and the site."""
