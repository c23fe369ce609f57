"""vLLM's `concat_mla_q(ql_nope, q_pe, q_out)`: MLA's decode queries assembled for FlashMLA (DeepSeek-V3.2's sparse
FlashMLA backend, vllm/v1/attention/backends/mla/flashmla_sparse.py, every layer of every decode step), replacing
torch.cat((ql_nope, q_pe), dim=-1).

q_out[t, h] = concat(ql_nope[t, h], q_pe[t, h]) for every token t and head h, copied bit for bit. vLLM's kernel
takes any strides with the last dim contiguous, nope_dim a multiple of 512 and rope_dim 64; here ql_nope is the
transposed view of the [heads, tokens, 512] product MLA's absorbed query projection writes, q_pe the rope part of
the [tokens, heads, 192] query (128 + 64), q_out a contiguous [tokens, heads, 576] workspace (DeepSeek's 128
heads on one GPU by default). Read from vLLM's csrc/cache_kernels.cu (concat_mla_q), _custom_ops.py and its
callers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.ops import reads
from kvbench.ops.base import Output, WriteCase, Workload, positive

Q_NOPE = 128  # DeepSeek's qk_nope_head_dim: the query's rope part follows it


@dataclasses.dataclass(frozen=True)
class Case(WriteCase):
    """`num_tokens` queries of num_heads heads concatenated."""

    OP: ClassVar[str] = "concat-mla-q"
    SLOT_PATTERNS: ClassVar[tuple[str, ...]] = ("random",)

    num_heads: int = 128
    kv_lora_rank: int = 512
    pe_dim: int = 64

    def __post_init__(self):
        super().__post_init__()
        positive(self, "num_heads", "kv_lora_rank", "pe_dim")
        self.require_warm()

    @property
    def entry(self) -> int:
        return self.kv_lora_rank + self.pe_dim

    @property
    def cache_bytes(self) -> int:
        return (self.num_tokens + reads.DENSE_SLACK) * self.num_heads * self.entry * self.input_element_size

    @property
    def input_bytes(self) -> int:
        return self.num_tokens * self.num_heads * (self.kv_lora_rank + Q_NOPE + self.pe_dim) * self.input_element_size

    @property
    def bytes_moved(self) -> int:
        """Both parts read once, the concatenation written once."""
        return 2 * self.num_tokens * self.num_heads * self.entry * self.input_element_size


@dataclasses.dataclass
class ConcatWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("ql_nope", "q_pe")

    ql_nope: torch.Tensor  # [tokens, heads, kv_lora_rank], a transposed [heads, tokens, kv_lora_rank]
    q_pe: torch.Tensor  # [tokens, heads, pe_dim], the rope part of [tokens, heads, 128 + pe_dim]
    q_all: torch.Tensor  # [tokens + DENSE_SLACK, heads, entry]

    @property
    def q_out(self) -> torch.Tensor:
        return self.q_all[: self.case.num_tokens]

    def inputs(self) -> list[torch.Tensor]:
        return [self.ql_nope, self.q_pe]

    def outputs(self) -> list[torch.Tensor]:
        return [self.q_all]

    def expected(self) -> list[Output]:
        return [reads.dense_output("concatenated queries", self.q_all, concatenated(self), ("head", "element"))]


def concatenated(w: ConcatWorkload) -> torch.Tensor:
    return torch.cat([w.ql_nope, w.q_pe], dim=-1)


def make(case: Case, seed: int) -> ConcatWorkload:
    gen = torch.Generator(device=case.device).manual_seed(seed)
    kw = dict(generator=gen, device=case.device, dtype=case.torch_dtype)
    ql_nope = torch.randn(case.num_heads, case.num_tokens, case.kv_lora_rank, **kw).transpose(0, 1)
    q = torch.randn(case.num_tokens, case.num_heads, Q_NOPE + case.pe_dim, **kw)
    q_all = reads.dense(case.num_tokens, (case.num_heads, case.entry), case.torch_dtype, case.device)
    slots = torch.arange(case.num_tokens, device=case.device)
    return ConcatWorkload(case, slots, ql_nope, q[..., Q_NOPE:], q_all)


def make_workloads(case: Case, seed: int, sets: int = 1) -> list[ConcatWorkload]:
    return [make(case, seed)]


def reference_write(w: ConcatWorkload) -> None:
    w.q_out.copy_(concatenated(w))
