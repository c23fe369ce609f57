"""What every cache-write op shares: the common case fields, the workload's outputs, and validation.

An op is one module of kvbench.ops (see its __init__) that declares
- a Case: a frozen dataclass of its parameters with vLLM's defaults, validated on construction;
- a Workload: the tensors of one call (inputs, slot mapping, scales, the caches it writes), made by `make`;
- the reference: `expected()` gives, for each output tensor, the rows the valid slots must hold;
- `bytes_moved`: what one call must read and write at least (the numerator of "x ideal").
Verification (kvbench.ops.verify) and timing work on these alone, so they are the same for every op.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.errors import CaseError

DTYPES = {"half": torch.float16, "bfloat16": torch.bfloat16, "float": torch.float32}
DEVICES = ("cuda", "cpu")
# warm: the same inputs and slots every call (vLLM's method: small cases live in L2); cold: the calls rotate
# through enough input sets and (disjoint) slot mappings that one rotation touches several times the L2.
L2_STATES = ("warm", "cold")


def choose(what: str, value, allowed) -> None:
    """Raise a one-line CaseError unless `value` is one of `allowed`."""
    if value not in allowed:
        names = ", ".join(str(a) for a in allowed)
        raise CaseError(f"{what} {value!r} is not supported; choose one of: {names}")


def positive(case, *names: str) -> None:
    for name in names:
        value = getattr(case, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CaseError(f"{name} {value!r} is not supported; it must be a positive integer")


@dataclasses.dataclass(frozen=True)
class WriteCase:
    """Fields every op has: `num_tokens` tokens written into a paged cache of num_blocks x block_size slots."""

    OP: ClassVar[str] = ""
    BLOCK_SIZES: ClassVar[tuple[int, ...]] = (16, 32)
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = ("auto",)
    SLOT_PATTERNS: ClassVar[tuple[str, ...]] = ("random", "prefill", "decode", "padded", "mixed", "decode-padded")
    FP8_FORMATS: ClassVar[dict[str, str | None]] = {}  # kv_cache_dtype -> the fp8 format stored (e4m3, e5m2)

    num_tokens: int
    num_blocks: int = 16384
    block_size: int = 16
    dtype: str = "bfloat16"
    kv_cache_dtype: str = "auto"
    device: str = "cuda"
    slots: str = "random"
    l2: str = "warm"
    seed: int = 42

    def __post_init__(self):
        positive(self, "num_tokens", "num_blocks")
        choose("block_size", self.block_size, self.BLOCK_SIZES)
        choose("dtype", self.dtype, tuple(DTYPES))
        choose("kv_cache_dtype", self.kv_cache_dtype, self.KV_CACHE_DTYPES)
        choose("device", self.device, DEVICES)
        choose("slots", self.slots, self.SLOT_PATTERNS)
        choose("l2", self.l2, L2_STATES)
        if self.num_tokens > self.num_slots:
            need = -(-self.num_tokens // self.block_size)
            raise CaseError(
                f"num_tokens {self.num_tokens} exceeds the cache's {self.num_slots} slots "
                f"(num_blocks {self.num_blocks} x block_size {self.block_size}); use --num-blocks {need} or more"
            )
        from kvbench.ops import slots

        slots.check(self.slots, self.num_tokens)
        need = slots.blocks_needed(self.slots, self.num_tokens, self.block_size)
        if self.slots not in ("random", "padded") and need > self.num_blocks:
            why = ("puts each token in its own block" if self.slots.startswith("decode") else
                   "gives each sequence blocks of its own")
            raise CaseError(
                f"num_tokens {self.num_tokens} exceeds num_blocks {self.num_blocks}: slots {self.slots!r} {why}; "
                f"use --num-blocks {need} or more"
            )

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def valid_tokens(self) -> int:
        """Tokens that are written (the 'padded' pattern makes the last quarter padding)."""
        from kvbench.ops.slots import valid_count

        return valid_count(self.slots, self.num_tokens)

    @property
    def fp8_format(self) -> str | None:
        """'e4m3', 'e5m2', or None when the output does not hold per-tensor-scaled fp8 codes."""
        return self.FP8_FORMATS.get(self.kv_cache_dtype)

    @property
    def is_fp8(self) -> bool:
        return self.fp8_format is not None

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def cache_dtype(self) -> torch.dtype:
        """The torch dtype of the cache tensors (fp8 caches are uint8, as in vLLM)."""
        return torch.uint8 if self.is_fp8 else self.torch_dtype

    @property
    def cache_element_size(self) -> int:
        return 1 if self.is_fp8 else self.input_element_size

    def require_warm(self, why: str = "") -> None:
        """A one-line CaseError unless the L2 is warm (for ops that cannot rotate input sets)."""
        if self.l2 != "warm":
            raise CaseError(f"l2 {self.l2!r} is not supported for op {self.OP!r}{why} (choose: warm)")

    def require_whole_blocks(self, what: str) -> None:
        """A one-line CaseError naming the nearest sizes unless num_tokens is a multiple of block_size."""
        if self.num_tokens % self.block_size:
            lower = self.num_tokens // self.block_size * self.block_size
            near = " or ".join(str(n) for n in (lower, lower + self.block_size) if n)
            raise CaseError(f"num_tokens {self.num_tokens} is not a multiple of block_size {self.block_size}: "
                            f"{self.OP} {what} whole cache blocks; use {near}")

    @property
    def input_element_size(self) -> int:
        return torch.empty((), dtype=self.torch_dtype).element_size()

    def replace(self, **changes) -> "WriteCase":
        return dataclasses.replace(self, **changes)

    # What each op defines:
    @property
    def cache_bytes(self) -> int:
        """Bytes of every output tensor of one workload (allocated once, shared by a cold rotation)."""
        raise NotImplementedError

    @property
    def input_bytes(self) -> int:
        """Bytes of the inputs of one call (one set of a cold rotation)."""
        raise NotImplementedError

    @property
    def bytes_moved(self) -> int:
        """Bytes one call must read and write at least: its inputs for the valid tokens, and what it stores."""
        raise NotImplementedError

    def label(self) -> str:
        shown = ", ".join(f"{f.name} {getattr(self, f.name)}" for f in dataclasses.fields(self)
                          if f.name not in ("num_tokens", "seed"))
        return f"{self.OP}: {self.num_tokens} tokens, {shown}"


def slot_index(view: torch.Tensor, offset_dims: int, slots: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Index of `slots` into a view [block, *offset_dims dims of the offset in the block, *row]: the block, then
    the offset written in the mixed radix of those dims (one dim: just the offset)."""
    sizes = list(view.shape[1 : 1 + offset_dims])
    per_block = 1
    for size in sizes:
        per_block *= size
    index = [torch.div(slots, per_block, rounding_mode="floor")]
    rest = slots % per_block
    for i in range(len(sizes)):
        below = 1
        for size in sizes[i + 1 :]:
            below *= size
        index.append(torch.div(rest, below, rounding_mode="floor"))
        rest = rest % below
    return tuple(index)


@dataclasses.dataclass
class Output:
    """One tensor a call writes, as verification sees it.

    `rows` is a view of it indexed [block, offset in block, *row] (the offset may span `offset_dims` dims, see
    slot_index); `expected` holds, for each valid token in order,
    the row the reference stores ([valid tokens, *row], the same element order); `row_dims` names the row's
    dimensions for messages ("head", "dim"); `fp8` is the float8 format of its elements (None: compared bit for bit).
    """

    name: str
    tensor: torch.Tensor
    rows: torch.Tensor
    expected: torch.Tensor
    row_dims: tuple[str, ...]
    fp8: str | None = None
    scale: torch.Tensor | None = None  # for tolerance checks of fp8 outputs (dequantised values)
    source: torch.Tensor | None = None  # the input rows before quantisation, for explaining wrong fp8 bytes
    offset_dims: int = 1
    is_scale: bool = False  # float32 scales computed by the implementation (compared as its `check` says)
    # Where the expected rows are in `rows` when not at the workload's valid slots: a dense output's row numbers
    # (a gather's [tokens, ...] destination, `rows` = the tensor with a dim of 1 after the first), a block copy's
    # destination blocks. None: at the slots of the workload's slot_mapping, as for every cache write.
    slots: torch.Tensor | None = None


@dataclasses.dataclass
class Workload:
    """The tensors of one call. Each op subclasses it with its own inputs; `slot_mapping` (int64 [num_tokens],
    negative = padding) and `case` are common."""

    INPUT_NAMES: ClassVar[tuple[str, ...]] = ()  # of `inputs()`, in order, for messages
    # True where the reference can only describe the very first call (an op that changes its own inputs, such as
    # mla-rope's in-place rotation): that call is then always checked on its own (kvbench.runner.prepare)
    CHECK_FIRST_CALL: ClassVar[bool] = False

    case: WriteCase
    slot_mapping: torch.Tensor

    def inputs(self) -> list[torch.Tensor]:
        """Everything a call reads (checked unchanged after timing)."""
        raise NotImplementedError

    def outputs(self) -> list[torch.Tensor]:
        """Every tensor a call writes (poisoned before verification)."""
        raise NotImplementedError

    def expected(self) -> list[Output]:
        """The reference's result at the valid slots, for each output."""
        raise NotImplementedError
