"""How long a write takes and how far it is from the limit: timing, copy bandwidth, GPU state, a fresh process
per case, and the independent cross-check of the timing."""
