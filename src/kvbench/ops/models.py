"""Model presets: the KV-cache shapes real models write on one GPU (`--model NAME [--tp N]`, the asv class Served).

Each preset names the values it takes from the model's Hugging Face `config.json`: `num_key_value_heads` (grouped-
query attention keeps fewer KV heads than query heads), `head_dim` (or hidden_size / num_attention_heads where the
config has no head_dim), `num_attention_heads`; for DeepSeek's MLA models `kv_lora_rank` and `qk_rope_head_dim`
(the latent row the MLA cache holds), and for V3.2 its indexer's `index_head_dim`.

Tensor parallelism splits the KV heads over the GPUs as vLLM does: N GPUs hold num_key_value_heads / N each when N
divides them, and one (replicated) each when the heads divide N; N must also divide the query heads. MLA's latent
cache is not split: every GPU holds the whole row of every token.
"""

from __future__ import annotations

import dataclasses

from kvbench.errors import CaseError


# The other cache ops a model's caches go through, by its write op: block copies and fp8 conversion of a kv cache;
# the gathers, grouped and RoPE-fused writes and query concatenation of an MLA cache; V3.2's indexer and fp8_ds_mla
# gathers.
READ_OPS = {"kv": ("convert-fp8", "swap-blocks"),
            "mla": ("gather", "cp-gather", "mla-grouped", "concat-mla-q", "mla-rope")}
SPARSE_READ_OPS = ("indexer-gather", "upconvert-gather")
QUERY_OPS = ("concat-mla-q", "mla-rope")


@dataclasses.dataclass(frozen=True)
class Model:
    """One model's attention shapes as its config.json gives them."""

    name: str
    source: str  # the Hugging Face repository whose config.json the values are from
    attention_heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads (MLA: the latent cache has none; 1 here)
    head_dim: int  # head_dim (MLA: not used)
    op: str = "kv"  # kvbench's op for its cache write: kv (reshape_and_cache_flash) or mla
    kv_lora_rank: int = 0  # MLA
    rope_dim: int = 0  # MLA: qk_rope_head_dim
    indexer_head_dim: int = 0  # DeepSeek V3.2's indexer keys (op indexer)
    sparse: bool = False  # attends through DeepSeek's sparse attention: its MLA caches at block 64 (kvbench.ops.served)
    note: str = ""

    @property
    def ops(self) -> tuple[str, ...]:
        """Its cache write, then the other cache ops that touch its caches (kvbench.coverage names their vLLM ops)."""
        ops = (self.op, *READ_OPS[self.op])
        return ops + ("indexer", *SPARSE_READ_OPS) if self.indexer_head_dim else ops

    def tp_sizes(self, up_to: int = 64) -> list[int]:
        """The tensor-parallel sizes vLLM accepts for this model (powers of two up to `up_to`)."""
        sizes = [2**i for i in range(up_to.bit_length()) if 2**i <= up_to]
        return [n for n in sizes if self.attention_heads % n == 0
                and (self.op == "mla" or self.kv_heads % n == 0 or n % self.kv_heads == 0)]

    def kv_heads_per_gpu(self, tp: int) -> int:
        if tp not in self.tp_sizes(max(tp, 64)):
            raise CaseError(f"--tp {tp} does not split model {self.name!r} ({self.attention_heads} attention heads, "
                            f"{self.kv_heads} KV heads); choose one of: {', '.join(map(str, self.tp_sizes()))}")
        return max(1, self.kv_heads // tp)

    def fields(self, tp: int = 1, op: str | None = None) -> tuple[str, dict]:
        """(op, case fields) of this model's cache write on one GPU of `tp`."""
        op = op or self.op
        if op not in self.ops:
            raise CaseError(f"model {self.name!r} has no op {op!r}: its caches go through ops {', '.join(self.ops)} "
                            f"(choose one of them)")
        heads = self.kv_heads_per_gpu(tp)
        if op in ("kv", *READ_OPS["kv"]):
            return op, {"num_heads": heads, "head_size": self.head_dim}
        if op in ("indexer", "indexer-gather"):
            return op, {"head_dim": self.indexer_head_dim}
        if op == "upconvert-gather":  # fp8_ds_mla rows: their shape is fixed (512 + 64)
            return op, {}
        latent = {"kv_lora_rank": self.kv_lora_rank, "pe_dim": self.rope_dim}
        if op in QUERY_OPS:  # the query's heads, which tensor parallelism splits
            return op, {"num_heads": self.attention_heads // tp, **latent}
        return op, latent

    def describe(self, tp: int = 1) -> str:
        if self.op == "mla":
            extra = f", indexer keys of {self.indexer_head_dim}" if self.indexer_head_dim else ""
            return f"{self.name}: MLA latent {self.kv_lora_rank} + {self.rope_dim} per token{extra} ({self.source})"
        return (f"{self.name}: {self.kv_heads_per_gpu(tp)} KV heads x {self.head_dim} per GPU at tp {tp} "
                f"({self.kv_heads} KV heads, {self.attention_heads} attention heads; {self.source})")


MODELS = {m.name: m for m in (
    Model("vllm-benchmark", "vLLM's benchmarks/kernels/benchmark_reshape_and_cache.py defaults", 128, 128, 128,
          note="not a model: the benchmark script's 128 x 128"),
    Model("llama-3.1-8b", "meta-llama/Llama-3.1-8B", 32, 8, 128),
    Model("llama-3.1-70b", "meta-llama/Llama-3.1-70B", 64, 8, 128),
    Model("llama-3.1-405b", "meta-llama/Llama-3.1-405B", 128, 8, 128),
    Model("qwen3-8b", "Qwen/Qwen3-8B", 32, 8, 128),
    Model("qwen3-32b", "Qwen/Qwen3-32B", 64, 8, 128),
    Model("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B (MoE)", 32, 4, 128),
    Model("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B (MoE)", 64, 4, 128),
    Model("mistral-7b", "mistralai/Mistral-7B-v0.3", 32, 8, 128),
    Model("mistral-large-2", "mistralai/Mistral-Large-Instruct-2407", 96, 8, 128),
    Model("gemma-2-9b", "google/gemma-2-9b", 16, 8, 256),
    Model("gemma-3-27b", "google/gemma-3-27b-it (text_config)", 32, 16, 128),
    Model("gpt-oss-20b", "openai/gpt-oss-20b", 64, 8, 64),
    Model("gpt-oss-120b", "openai/gpt-oss-120b", 64, 8, 64),
    Model("deepseek-v3", "deepseek-ai/DeepSeek-V3", 128, 1, 0, op="mla", kv_lora_rank=512, rope_dim=64),
    Model("deepseek-v3.2", "deepseek-ai/DeepSeek-V3.2-Exp", 128, 1, 0, op="mla", kv_lora_rank=512, rope_dim=64,
          indexer_head_dim=128, sparse=True),
)}


def get(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise CaseError(f"model {name!r} is not a preset; choose one of: {', '.join(MODELS)}") from None
