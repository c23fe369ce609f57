"""vLLM's `concat_and_cache_mla_rope_fused(positions, q_pe, k_pe, kv_c, cos_sin_cache, is_neox, slot_mapping,
kv_cache, kv_cache_dtype, kv_cache_scale)`: DeepSeek's rotary embedding of the query's and the key's rope parts
fused with the MLA cache write (csrc/cache_kernels_fused.cu; reachable through vLLM's fuse_rope_kvcache_cat_mla
pass, off by default: notes/vllm-releases.md).

For each token t, with cos = cos_sin_cache[positions[t], :rot_dim / 2] and sin = the second half (cos_sin_cache is
[max_position, rot_dim] of the inputs' dtype), each pair (x, y) of q_pe[t, h] for every head (is_neox: x = element
i, y = element i + rot_dim / 2; else GPT-J style, as DeepSeek: x = element 2i, y = element 2i + 1) becomes
x' = x * cos - y * sin, y' = y * cos + x * sin, in place. vLLM computes in the inputs' 16-bit type: each product and
each sum rounded to it (round to nearest even; the products of 16-bit values are exact in float32). Then, for a
token with a valid slot, k_pe[t] (rot_dim values) is rotated the same
way in place, and the cache row at the slot becomes concat(kv_c[t], rotated k_pe[t]): copied (`auto`) or as fp8
codes of x / kv_cache_scale (`fp8`, `fp8_e5m2`). 16-bit inputs only: with float32 inputs the kernel's arithmetic is
left to the compiler's multiply-add contraction, which no reference fixes bit for bit. The tensors are as DeepSeek's
MLA passes them: q_pe the rope part of the [tokens, heads, 192] query, kv_c and k_pe the two parts of the [tokens,
576] latent projection (strided views), 128 heads, a RoPE table of 16384 positions (base 10000).

Verification: q_pe and k_pe are state the op rotates in place, neither poisoned nor required unchanged. After the
first call they must be the reference's rotation of their initial values, bit for bit (q_pe for the valid tokens:
what a padding token's q_pe holds is unused, and vLLM 0.34.0 on an H100 did not leave the reference's rotation
there); on the timed path (K calls
in one replay: K rotations deep) the cache rows must hold kv_c and k_pe as it then is (quantized for fp8), and
padding tokens' k_pe must be untouched.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from kvbench.errors import CaseError
from kvbench.ops import fp8, slots
from kvbench.ops.base import Output, WriteCase, Workload, choose, positive
from kvbench.ops.poison import bits, poison_value

KV_CACHE_DTYPES = {"auto": None, "fp8": "e4m3", "fp8_e4m3": "e4m3", "fp8_e5m2": "e5m2"}
Q_NOPE = 128
MAX_POSITION = 16384
ROPE_BASE = 10000.0


@dataclasses.dataclass(frozen=True)
class Case(WriteCase):
    """`num_tokens` tokens: their queries' and keys' rope parts rotated, their MLA rows written."""

    OP: ClassVar[str] = "mla-rope"
    BLOCK_SIZES: ClassVar[tuple[int, ...]] = (16, 64)
    FP8_FORMATS: ClassVar[dict[str, str | None]] = KV_CACHE_DTYPES
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = tuple(KV_CACHE_DTYPES)

    num_blocks: int = 2048
    block_size: int = 64
    num_heads: int = 128
    kv_lora_rank: int = 512
    pe_dim: int = 64
    is_neox: bool = False

    def __post_init__(self):
        super().__post_init__()
        positive(self, "num_heads", "kv_lora_rank", "pe_dim")
        choose("is_neox", self.is_neox, (False, True))
        if self.pe_dim % 2:
            raise CaseError(f"pe_dim {self.pe_dim} is not supported; the rotation takes pairs (an even pe_dim)")
        if self.dtype == "float":
            raise CaseError("dtype 'float' is not supported for op 'mla-rope': vLLM's kernel leaves float32 "
                            "arithmetic to the compiler's multiply-add contraction; choose half or bfloat16")
        self.require_warm(": it rotates its inputs in place")

    @property
    def entry(self) -> int:
        return self.kv_lora_rank + self.pe_dim


    @property
    def cache_bytes(self) -> int:
        return self.num_slots * self.entry * self.cache_element_size + MAX_POSITION * self.pe_dim * \
            self.input_element_size

    @property
    def input_bytes(self) -> int:
        return self.num_tokens * (self.num_heads * (Q_NOPE + self.pe_dim) + self.entry) * self.input_element_size

    @property
    def bytes_moved(self) -> int:
        """q_pe read and written for every token; for each valid token k_pe read and written, kv_c and its row of
        the RoPE table read, the cache row written."""
        e = self.input_element_size
        queries = self.num_tokens * (2 * self.num_heads * self.pe_dim + self.pe_dim) * e
        keys = self.valid_tokens * ((2 * self.pe_dim + self.kv_lora_rank) * e + self.entry * self.cache_element_size)
        return queries + keys


@dataclasses.dataclass
class RopeWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("kv_c", "positions", "cos_sin_cache", "slot_mapping",
                                              "kv_cache_scale")
    CHECK_FIRST_CALL: ClassVar[bool] = True  # q_pe and k_pe are rotated in place: only the first call is known

    positions: torch.Tensor  # int64 [num_tokens]
    q_pe: torch.Tensor  # [num_tokens, heads, pe_dim], the rope part of the [tokens, heads, 128 + pe_dim] query
    k_pe: torch.Tensor  # [num_tokens, pe_dim], the rope part of the [tokens, entry] latent projection
    kv_c: torch.Tensor  # [num_tokens, kv_lora_rank], its latent part
    cos_sin_cache: torch.Tensor  # [MAX_POSITION, pe_dim]: cos then sin
    kv_cache: torch.Tensor  # [num_blocks, block_size, entry]: dtype or uint8
    scale: torch.Tensor  # float32 [1]
    q_initial: torch.Tensor  # copies of q_pe and k_pe as made (the first call's reference)
    k_initial: torch.Tensor
    calls_verified: int = 0

    def inputs(self) -> list[torch.Tensor]:
        return [self.kv_c, self.positions, self.cos_sin_cache, self.slot_mapping, self.scale]

    def outputs(self) -> list[torch.Tensor]:
        return [self.kv_cache]

    def expected(self) -> list[Output]:
        """The first time: the cache rows and q_pe and k_pe one rotation from their initial values; later (the
        timed path): the cache rows from k_pe as it is, padding tokens' k_pe as made. q_pe and k_pe are compared
        through copies (the verifier puts poison where it has compared)."""
        c = self.case
        first = self.calls_verified == 0
        self.calls_verified += 1
        valid, tokens = slots.valid(self.slot_mapping)
        padding = (self.slot_mapping < 0).nonzero().flatten()
        if first:
            q_want, k_want = rotated(self, self.q_initial, self.k_initial)
        else:
            k_want = self.k_pe
        row = stored(self.kv_c[tokens], k_want[tokens], self.scale, c)
        source = torch.cat([self.kv_c[tokens], k_want[tokens]], dim=1)
        out = [Output("kv cache", self.kv_cache, self.kv_cache, row, ("element",), c.fp8_format,
                      self.scale.reshape(()), source)]
        k_now = self.k_pe.clone()
        if first:
            q_now = self.q_pe.clone()
            if padding.numel():  # not compared: poison, as the verifier leaves what it compared
                bits(q_now)[padding] = poison_value(q_now)
            out.append(Output("rotated q_pe", q_now, q_now.unsqueeze(1), q_want[tokens], ("head", "element"),
                              slots=tokens))
            out.append(Output("rotated k_pe", k_now, k_now.unsqueeze(1), k_want, ("element",),
                              slots=torch.arange(c.num_tokens, device=c.device)))
        elif padding.numel():  # the valid tokens' k_pe is not compared: poison, as the verifier leaves what it compared
            bits(k_now)[tokens] = poison_value(k_now)
            out.append(Output("k_pe of padding tokens", k_now, k_now.unsqueeze(1), self.k_initial[padding],
                              ("element",), slots=padding))
        return out


def halves(x: torch.Tensor, neox: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotated pairs' x and y parts of [..., rot_dim]."""
    half = x.shape[-1] // 2
    return (x[..., :half], x[..., half:]) if neox else (x[..., 0::2], x[..., 1::2])


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, neox: bool) -> torch.Tensor:
    """x [..., rot_dim] rotated by cos / sin [..., rot_dim / 2] (broadcast), each product and sum rounded to x's
    dtype as vLLM's 16-bit arithmetic does."""
    dt = x.dtype
    a, b = (v.float() for v in halves(x, neox))
    c, s = cos.float(), sin.float()

    def r(v):
        return v.to(dt).float()

    a2 = (r(a * c) - r(b * s)).to(dt)
    b2 = (r(b * c) + r(a * s)).to(dt)
    out = torch.empty_like(x)
    oa, ob = halves(out, neox)
    oa.copy_(a2)
    ob.copy_(b2)
    return out


def rotated(w: RopeWorkload, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q rotated for every token, k rotated for the tokens with a valid slot, as it was for the others)."""
    half = w.case.pe_dim // 2
    table = w.cos_sin_cache[w.positions]
    cos, sin = table[:, :half], table[:, half:]
    q2 = rotate(q, cos[:, None, :], sin[:, None, :], w.case.is_neox)
    k2 = torch.where((w.slot_mapping >= 0)[:, None], rotate(k, cos, sin, w.case.is_neox), k)
    return q2, k2


def stored(kv_c: torch.Tensor, k_pe: torch.Tensor, scale: torch.Tensor, case: Case) -> torch.Tensor:
    row = torch.cat([kv_c, k_pe], dim=-1)
    return fp8.quantize(row, scale.reshape(()), case.fp8_format) if case.is_fp8 else row


def rope_table(case: Case) -> torch.Tensor:
    """[MAX_POSITION, pe_dim]: cos(p * f_i) then sin(p * f_i), f_i = base ** (-2i / pe_dim), in the inputs' dtype."""
    half = case.pe_dim // 2
    freq = ROPE_BASE ** (-torch.arange(half, dtype=torch.float64) * 2 / case.pe_dim)
    angles = torch.arange(MAX_POSITION, dtype=torch.float64)[:, None] * freq[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1).to(case.torch_dtype).to(case.device)


def make(case: Case, seed: int, slot_mapping: torch.Tensor, caches: list | None = None) -> RopeWorkload:
    gen = torch.Generator(device=case.device).manual_seed(seed)
    kw = dict(generator=gen, device=case.device, dtype=case.torch_dtype)
    q = torch.randn(case.num_tokens, case.num_heads, Q_NOPE + case.pe_dim, **kw)
    kv = torch.randn(case.num_tokens, case.entry, **kw)
    positions = torch.randint(0, MAX_POSITION, (case.num_tokens,), generator=gen, device=case.device)
    if case.is_fp8:
        scale = fp8.scales(kv[:, None, :]).reshape(1) * math.sqrt(2)  # rotated values reach sqrt(2) x max|x|
    else:
        scale = torch.ones(1, dtype=torch.float32, device=case.device)
    if caches:
        (kv_cache,) = caches
    else:
        kv_cache = torch.empty(case.num_blocks, case.block_size, case.entry,
                               dtype=torch.uint8 if case.is_fp8 else case.torch_dtype, device=case.device)
    q_pe, k_pe = q[..., Q_NOPE:], kv[:, case.kv_lora_rank:]
    return RopeWorkload(case, slot_mapping, positions, q_pe, k_pe, kv[:, : case.kv_lora_rank], rope_table(case),
                        kv_cache, scale.float(), q_pe.clone(), k_pe.clone())


def reference_write(w: RopeWorkload) -> None:
    """Rotate q_pe and (valid tokens') k_pe in place, write the valid tokens' rows (torch ops, no host sync)."""
    q2, k2 = rotated(w, w.q_pe, w.k_pe)
    w.q_pe.copy_(q2)
    w.k_pe.copy_(k2)
    n = w.slot_mapping.shape[0]
    src, where, any_valid = slots.graph_safe(w.slot_mapping)
    rows = stored(w.kv_c[:n][src], w.k_pe[:n][src], w.scale, w.case)
    flat = w.kv_cache.view(-1, w.kv_cache.shape[-1])
    flat[where] = torch.where(any_valid, rows, flat[where])
