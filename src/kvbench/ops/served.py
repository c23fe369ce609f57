"""What vLLM's attention backends really pass to the cache writes, release by release (`--layout served`).

Read from the release wheels (each release's vllm/v1/attention/backends/*.py, its KV-cache allocation in
gpu_model_runner / attn_utils / kv_cache_interface, and its default block size; notes/vllm-releases.md):
- flash-attn (FLASH_ATTN: vLLM's default on NVIDIA Hopper; writes with `reshape_and_cache_flash`): 0.20-0.22 a
  [2, blocks, ...] cache split in two (`nhd-split`); 0.23-0.25 [blocks, 2, ...] (`nhd`, vLLM's benchmark layout);
  from 0.26 keys and values side by side in each row (`nhd-packed`, vLLM's default layout NHD / LBNHC);
- triton-attn (TRITON_ATTN; writes with vLLM's Triton op `triton_reshape_and_cache_flash`): `nhd` up to 0.25,
  then `nhd-packed`;
- flashinfer (FLASHINFER; `reshape_and_cache_flash`): `nhd` up to 0.25, then `nhd-packed` (on Blackwell it
  imposes HND on the whole model: `hnd-packed`, not tracked here: kvbench measures on Hopper);
- MLA (FLASH_ATTN_MLA, the Hopper default, and the other dense MLA backends): `concat_and_cache_mla` into the whole
  contiguous [blocks, block_size, 576] cache (kvbench's mla op as it is). From 0.33 an fp8 cache whose scale is 1.0
  (no calibrated scales in the checkpoint, as DeepSeek's) is written with skip_scale (the MLA layer passes
  `kv_cache_dtype in fp8 dtypes and k_scale == 1.0`; earlier releases have no such argument). DeepSeek V3.2's
  sparse attention backends need block 64 in every release, whatever the cache dtype, and take an fp8 cache only
  as `fp8_ds_mla` rows; its indexer keys [blocks, 64, 132] (kvbench's indexer op).
vLLM's default block size is 16 up to 0.33 and 64 from 0.34 (FlashMLA's and the indexer's kernels need 64).
On a CPU, vLLM's CPU backend writes with `cpu_attn_reshape_and_cache` into its own layout (`cpu-vec`).
Where no vLLM is installed, the newest release kvbench knows stands for it (said in the reason).
"""

from __future__ import annotations

import dataclasses
import re

from kvbench.errors import CaseError

NEWEST_KNOWN = "0.34.0"
BACKENDS = ("flash-attn", "triton-attn", "flashinfer")
# The backend whose served layout an implementation is measured in by default: the one that calls it in vLLM.
DEFAULT_BACKEND = {"vllm-triton": "triton-attn"}


@dataclasses.dataclass(frozen=True)
class Served:
    """How one backend passes the cache in a range of releases: kvbench's layout and vLLM's default block size."""

    backend: str
    first: str  # first release (inclusive)
    last: str | None  # last release (inclusive), None: still so in the newest known
    layout: str
    block_size: int


TABLE = (
    Served("flash-attn", "0.20.0", "0.22.1", "nhd-split", 16),
    Served("flash-attn", "0.23.0", "0.25.1", "nhd", 16),
    Served("flash-attn", "0.26.0", "0.33.99", "nhd-packed", 16),
    Served("flash-attn", "0.34.0", None, "nhd-packed", 64),
    Served("triton-attn", "0.20.0", "0.25.1", "nhd", 16),
    Served("triton-attn", "0.26.0", "0.33.99", "nhd-packed", 16),
    Served("triton-attn", "0.34.0", None, "nhd-packed", 64),
    Served("flashinfer", "0.20.0", "0.25.1", "nhd", 16),
    Served("flashinfer", "0.26.0", "0.33.99", "nhd-packed", 16),
    Served("flashinfer", "0.34.0", None, "nhd-packed", 64),
)
MLA_BLOCK_SIZE = 64  # FlashMLA (sparse, V3.2) and the indexer need 64; vLLM 0.34's default for dense MLA too
MLA_SKIP_SCALE_DTYPES = ("fp8", "fp8_e4m3", "fp8_e5m2")  # from 0.33 written with skip_scale at scale 1.0


def version_key(version: str) -> tuple[int, int, int]:
    """(0, 33, 0) for '0.33.0', '0.33.0rc1', '0.34.0+cu130'; (0, 11, 1) for '0.11.1.dev42+g1a2b3c4'."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not match:
        raise CaseError(f"vLLM version {version!r} is not a version kvbench can read (like 0.33.0)")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def served(backend: str, version: str) -> Served:
    """The row of TABLE for `backend` in vLLM `version`; CaseError when kvbench does not know it."""
    if backend not in BACKENDS:
        raise CaseError(f"backend {backend!r} is not supported; choose one of: {', '.join(BACKENDS)}")
    key = version_key(version)
    for row in TABLE:
        if row.backend == backend and version_key(row.first) <= key and (
                row.last is None or key <= version_key(row.last)):
            return row
    raise CaseError(f"vLLM {version} is older than the releases kvbench knows the served layout of "
                    f"(0.20.0 and later)")


def resolve(op: str, implementation: str, device: str, backend: str | None = None,
            version: str | None = None, kv_cache_dtype: str | None = None,
            sparse: bool = False) -> tuple[dict, str]:
    """The case fields (layout, block_size; skip_scale for an fp8 MLA cache) of `op` as the installed vLLM (or
    `version`) serves it for `implementation` on `device`, and a line saying where they come from. `sparse`: the
    model attends through DeepSeek's sparse attention (V3.2), whose MLA backends need block 64."""
    from kvbench.measure.machine import vllm_version

    version = version or vllm_version()
    known = version or NEWEST_KNOWN
    source = f"vLLM {version}" if version else f"no vLLM installed: vLLM {NEWEST_KNOWN}'s"
    if op != "kv":  # sparse attention (fp8_ds_mla rows) and the indexer need 64; dense MLA takes vLLM's default
        if op == "mla" and sparse and kv_cache_dtype in MLA_SKIP_SCALE_DTYPES:
            raise CaseError(f"DeepSeek's sparse attention serves an fp8 MLA cache as fp8_ds_mla rows, not "
                            f"{kv_cache_dtype!r}; choose kv_cache_dtype fp8_ds_mla (or auto)")
        sparse = sparse or op == "indexer" or kv_cache_dtype == "fp8_ds_mla"
        block = MLA_BLOCK_SIZE if sparse or version_key(known) >= (0, 34, 0) else 16
        if op == "mla" and kv_cache_dtype in MLA_SKIP_SCALE_DTYPES and version_key(known) >= (0, 33, 0):
            return ({"block_size": block, "skip_scale": True},
                    f"{source} {op} cache, block {block}, scale 1.0 written with skip_scale")
        return {"block_size": block}, f"{source} {op} cache, block {block}"
    if device == "cpu":
        return {"layout": "cpu-vec"}, f"{source} CPU backend (cpu_attn_reshape_and_cache)"
    backend = backend or DEFAULT_BACKEND.get(implementation, "flash-attn")
    row = served(backend, known)
    return ({"layout": row.layout, "block_size": row.block_size},
            f"{source} {backend} backend: layout {row.layout}, block {row.block_size}")
