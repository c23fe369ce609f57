"""Launch-parameter variants of kvbench's Triton kernels on a GPU, each verified before it is timed, against the copy
bandwidth measured in the same process. The defaults in kvbench.impls.kernels come from these tables
(notes/triton.md). Tables (--tables, default all):
- flash: the flash write (auto and fp8; launch shapes, eviction hints, the division, the slot awaited before the
  loads or not, the defaults before 2026-12-05), warm and cold;
- served: the write in vLLM's served layout (nhd-packed, block 64) at 8 and 4 KV heads x 128, shapes models serve;
- main: vLLM's benchmark shape (128 x 128, nhd, random slots) at 256, 1024 and 4096 tokens;
- decode: the served layout with small decode batches (64 and 512 tokens padded to vLLM's CUDA graphs), 1 to 128 heads;
- decode-cache: the as-served table's 64-token fp8 decode cases (its cases, made as it makes them), kvbench's write
  and vLLM's Triton op each timed the tuning tables' way and the as-served table's (kvbench.runner.run_case);
- decode-rounds: the same cases, kvbench's launches and vLLM's op sampled in interleaved rounds, the SM clock read
  after each round;
- decode-served-way: the as-served table's 64-token fp8 decode rows measured its way, kvbench's write in several
  launches (the fp8 eviction hint on and off, warps, the slot awaited or not, program sizes) beside vLLM's Triton op;
- mla: the MLA write (tokens per program, warps, the division, eviction hints), cold L2, random and consecutive slots,
  beside a torch copy of the same bytes (what a copy of that size reaches);
- mla-decode: the MLA write with decode batches (64 and 512 tokens, padded);
- indexer: the indexer write;
- paged: the paged write (tokens a program, in slot order or not, the value tile stored as loaded, the grid's
  order; vLLM's CUDA op and torch's indexed copies beside them), "x ideal" and "x sector ideal"
  (kvbench.ops.sectors), random and consecutive (prefill) slots;
- sectors: the sector model checked: a whole fill, a 2-bytes-per-sector strided write (in order, and by 4 KiB pieces
  in a random order), fills of 16 bytes of every sector or of every 2nd, 4th, 8th, and of a whole sector in every
  8th, of a region of 512 MiB and one of 8 GiB, measured against what the model predicts at the copy rate;
- gathers: the read side's gathers (gather auto and fp8, cp-gather, upconvert-gather): rows per program, warps,
  the piece a row is copied in.

Usage (GPU machine): PYTHONPATH=src python3 scripts/tune_triton.py [--quick] [--tables flash,mla,...] [--only REGEX]
"""

from __future__ import annotations

import argparse
import re
import statistics

import torch
import triton
from tabulate import tabulate

from kvbench.impls.kernels import cache_write, indexer, mla
from kvbench.measure import bandwidth
from kvbench.measure.timing import GraphSampler
from kvbench.ops import sectors
from kvbench.ops.verify import verify
from kvbench.runner import _round_robin, make_case, prepare, rotation_size


VLLM_TRITON = "vLLM's Triton op"  # the variant that times vLLM's own op beside kvbench's (within one fp8 step: it
# divides approximately), where vLLM's kernels are loaded
REFERENCE_COMPARE: dict[str, str] = {}  # other implementations' rows: how each is verified (_references)


def timed(p, bind, samples: int = 15, compare: str = "exact") -> float:
    """Verify a variant writer on the prepared case's workloads (all of a cold rotation), then its per-call µs."""
    writers = [bind(w) for w in p.workloads]
    write = writers[0] if len(writers) == 1 else _round_robin(writers)
    verify("variant", p.workloads[:1], writers[0], compare)
    return statistics.median(GraphSampler(write, min_calls=p.rotation).measure(samples)) * 1e6


def flash_variants(p):
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    c = p.case
    out = {"default": {}}
    for elements, warps in ((2048, 2), (4096, 4), (4096, 8), (8192, 4), (8192, 8), (16384, 8), (16384, 16)):
        out[f"{elements} el/{warps} w"] = cache_write.launch_config(c.num_tokens, c.num_heads, c.head_size, sm,
                                                                    c.is_fp8, elements, warps)
    for elements, warps in ((1024, 1), (2048, 2), (2048, 4), (4096, 4)):
        cfg = cache_write.launch_config(c.num_tokens, c.num_heads, c.head_size, sm, c.is_fp8, elements, warps)
        out[f"{elements} el/{warps} w, evict_first"] = {**cfg, "EVICT": "evict_first"}
        out[f"{elements} el/{warps} w, cached"] = {**cfg, "EVICT": ""}
    default = cache_write.launch_config(c.num_tokens, c.num_heads, c.head_size, sm, c.is_fp8)
    out["default, slot first"] = {**default, "LOAD_FIRST": False}  # the slot awaited before the loads
    out["default, loads first"] = {**default, "LOAD_FIRST": True}  # the rows loaded before the slot is known
    # (the default before 2026-12-06 in every grid; since, but for fp8 grids of 4 programs per SM or more)
    if default["EVICT"]:  # (fp8) the default's programs without the eviction hint
        out["default, cached"] = {**default, "EVICT": ""}
    if c.is_fp8:  # the defaults before 2026-12-05: div_rn, slot first, BLOCK_H halved down to one head, warps by
        # elements (1 for a decode batch)
        old_h = _previous_block_h(c, sm)
        old_warps = max(1, min(4, old_h * default["BLOCK_D"] // 1024))
        out["default, DIV 0"] = {**default, "DIV": 0}
        if not default["EVICT"]:  # a small batch: the default before 8bae977
            out["before 8bae977 (evict_first, 8 w)"] = {**default, **_before_small(default, c.num_tokens,
                                                                                   c.num_heads, sm)}
        for div in sorted({1, 2, 3} - {default["DIV"]}):  # the quotient clamped before its correction: no select
            # (3: the store saturates); the default's own division is the rows "default" and "default, 16 w"
            out[f"default, DIV {div}"] = {**default, "DIV": div}
            out[f"default, 16 w, DIV {div}"] = {**default, "DIV": div, "num_warps": 16}
        out["previous default"] = {**default, "BLOCK_H": old_h, "DIV": 0, "LOAD_FIRST": False, "num_warps": old_warps}
        # 4 warps on a 512-element program (4 KV heads x 128, 8 x 64) slowed fp8 prefill (H100, 2026-12-05)
        elements = default["BLOCK_H"] * default["BLOCK_D"]
        out["a warp per 256 el"] = {**default, "num_warps": max(1, min(4, elements // 256))}
        out["a warp per 1024 el"] = {**default, "num_warps": max(1, min(4, elements // 1024))}  # the rule before
        # 2026-12-05 with today's loads and division
    for warps in (2, 4, 8, 16, 32):  # the default's programs with other warps (vLLM's Triton op runs 16 on CUDA:
        # at a small batch, each thread's few elements shorten the one pass a program makes)
        out[f"default, {warps} w"] = {**default, "num_warps": warps}
    tile = {**default, "BLOCK_H": min(triton.next_power_of_2(c.num_heads), max(1, 2048 // default["BLOCK_D"])),
            "num_warps": 8}  # up to 2048 elements of a token a program (vLLM's Triton op's tile), 8 warps
    out["2048 el/8 w always"] = tile
    out["2048 el/16 w always"] = {**tile, "num_warps": 16}  # vLLM's Triton op's shape on CUDA
    whole = tile["BLOCK_H"] * tile["BLOCK_D"]  # the same programs (whole tokens up to 2048 elements: 16 of 128
    # heads x 128) with fewer warps
    out["whole tokens, 4 w"] = {**tile, "num_warps": 4}
    out["whole tokens, a warp per 128 el"] = {**tile, "num_warps": max(1, min(8, whole // 128))}
    if c.is_fp8:
        for elements, warps in ((2048, 2), (4096, 4), (8192, 4), (8192, 8)):
            cfg = cache_write.launch_config(c.num_tokens, c.num_heads, c.head_size, sm, True, elements, warps)
            out[f"{elements} el/{warps} w, cached"] = {**cfg, "EVICT": ""}
    return {**_flash_writers(out), **_references(c, {"vllm-triton": VLLM_TRITON})}


def _references(case, names: dict) -> dict:
    """Other implementations of the case as variants ({implementation: row name}): those that run here and take
    it, each verified as its implementation is (REFERENCE_COMPARE)."""
    from kvbench import impls

    out = {}
    for implementation, name in names.items():
        try:
            impl = impls.get(implementation, "kv")
            impl.check(case)
        except Exception:  # not loaded here, or not this layout: the table has the others' rows
            continue
        out[name] = impl.bind
        REFERENCE_COMPARE[name] = impl.compare
    return out


def _previous_block_h(c, sm: int) -> int:
    """BLOCK_H as the rule before 2026-12-05 chose it for an fp8 cache: up to 4096 elements, halved while the grid
    has fewer than 4 programs per SM, down to one head."""
    block_h = min(triton.next_power_of_2(c.num_heads), max(1, 4096 // triton.next_power_of_2(c.head_size)))
    while block_h > 1 and c.num_tokens * triton.cdiv(c.num_heads, block_h) < 4 * sm:
        block_h //= 2
    return block_h


def _flash_writers(configs):
    return {name: (lambda w, cfg=cfg: lambda: cache_write.reshape_and_cache(
        w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.case.fp8_format, w.k_scale, w.v_scale,
        w.case.layout, config=cfg)) for name, cfg in configs.items()}


def paged_variants(p):
    """The default; one token a program (value transposed, the default before 2026-12-05); tokens a program x heads
    x warps, in slot order or not; the value tile stored as loaded (VALUE_AS_LOADED); the grid's order
    (HEADS_FASTEST) and token order kept for prefill batches (RUNS_KEPT); eviction hints; vLLM's CUDA op and
    torch's indexed copies beside them. A variant whose launch equals an earlier row's is left out. The rows built
    on the default take its grid order and hint: since the twelfth session (2026-12-06) those of calls in slot
    order run heads fastest without a hint, so the same names timed before it are not comparable."""
    c = p.case
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    default = cache_write.launch_config(c.num_tokens, c.num_heads, c.head_size, sm, c.is_fp8, paged=True)
    one = cache_write.launch_config(c.num_tokens, c.num_heads, c.head_size, sm, c.is_fp8)  # a token a program
    out = {"default": default, "a token a program (before)": {**one, "VALUE_T": True, "LOAD_FIRST": True}}
    for tokens, heads, warps in ((16, 1, 4), (16, 2, 4), (32, 1, 2), (32, 1, 4), (32, 1, 8), (32, 2, 4), (64, 1, 4),
                                 (64, 1, 8), (128, 1, 4), (128, 1, 8)):
        block_h = min(heads, triton.next_power_of_2(c.num_heads))
        for sort in (False, True):
            out[f"{tokens} tokens x {block_h} heads, {warps} w, {'slot' if sort else 'token'} order"] = {
                **default, "TOKENS": tokens, "BLOCK_H": block_h, "num_warps": warps, "SORTED": sort}
    # the value tile stored as loaded (VALUE_AS_LOADED 1), transposed (0) or by the program's slots (2, the default:
    # as loaded where they are consecutive): in Triton 3.6's sm_90 code the as-loaded store's lanes run along the
    # tokens, the transposed one's along the dims (576 instructions a thread against 1400, bf16 128 x 128:
    # notes/triton.md); Triton 3.9 swaps the two, so the rows say which Triton they ran with
    if default["TOKENS"] > 1:
        version = f" (Triton {triton.__version__})"
        out[f"default, value transposed (before){version}"] = {**default, "VALUE_AS_LOADED": 0}
        out[f"default, value as loaded{version}"] = {**default, "VALUE_AS_LOADED": 1}
        # the grid's next program: the same tokens' next head (HEADS_FASTEST: neighbouring 4 KiB pieces of the
        # same blocks) or the next tokens of the same head; calls in slot order keeping token order where the slots
        # mostly follow each other (RUNS_KEPT) or not
        out["default, tokens fastest"] = {**default, "HEADS_FASTEST": False}
        out["default, heads fastest"] = {**default, "HEADS_FASTEST": True}
        out["default, slot order always"] = {**default, "RUNS_KEPT": False}
        out["default, token order"] = {**default, "SORTED": False}
        out["default, in slot order as large calls"] = {  # what SORT_MIN_ELEMENTS gives calls of 2**26 elements
            **default, "SORTED": True, "HEADS_FASTEST": cache_write.PAGED_SORTED_HEADS_FASTEST,  # or more
            "RUNS_KEPT": cache_write.PAGED_RUNS_KEPT}
        out["before (tokens fastest, slot order always)"] = {  # the default until 2026-12-06 (twelfth session)
            **default, "HEADS_FASTEST": False, "RUNS_KEPT": False, "EVICT": cache_write.EVICTION_POLICY[c.is_fp8]}
        for policy in ("", "evict_first", "evict_last"):  # the loads' and stores' eviction hint
            if policy != default["EVICT"]:
                out[f"default, {policy or 'cached'}"] = {**default, "EVICT": policy}
        for tokens in (16, 64):
            out[f"{tokens} tokens x 1 head, 4 w, slot order, value as loaded{version}"] = {
                **default, "TOKENS": tokens, "BLOCK_H": 1, "num_warps": 4, "SORTED": True, "VALUE_AS_LOADED": 1}
    unique = {}
    for name, cfg in out.items():  # (the default's own launch under another name is timed once)
        if cfg not in unique.values():
            unique[name] = cfg
    return {**_flash_writers(unique), **_references(c, {"vllm": "vLLM's CUDA op", "torch": "torch (indexed copies)"})}


def mla_variants(p):
    """Tokens per program x warps; for fp8 also the Markstein division, and eviction hints (not fp8_ds_mla's
    kernel, which takes neither)."""
    out = {"default": p.impl.bind}  # kvbench's own launch heuristic
    kv = p.case.kv_cache_dtype
    divs = (0, 1, 2) if kv in ("fp8", "fp8_e5m2") else (0,)
    evicts = ("", "evict_first") if kv != "fp8_ds_mla" else ("",)
    for tokens in (1, 2, 4, 8):
        for warps in (1, 2, 4):
            for div in divs:
                for evict in evicts:
                    name = f"{tokens} tok/{warps} w" + (f", DIV {div}" if div else "") + (f", {evict}" if evict else "")
                    out[name] = (lambda w, t=tokens, n=warps, d=div, e=evict: lambda: mla.concat_and_cache_mla(
                        w.kv_c, w.k_pe, w.kv_cache, w.slot_mapping, w.case.kv_cache_dtype, w.scale,
                        w.case.skip_scale, tokens=t, num_warps=n, div=d, evict=e))
    return out


def indexer_variants(p):
    out = {}
    for tokens in (1, 2, 4, 8, 16):
        for warps in (1, 2, 4):
            out[f"{tokens} tok/{warps} w"] = (lambda w, t=tokens, n=warps: lambda: indexer.indexer_k_quant_and_cache(
                w.k, w.kv_cache, w.slot_mapping, w.case.scale_fmt, tokens=t, num_warps=n))
    return out


def gather_variants(p):
    """The read side's Triton gathers (gather, cp-gather, upconvert-gather): rows per program x warps, and for the
    plain gathers the piece a row is copied in (CHUNK)."""
    from kvbench.impls.kernels import gather, read_rows

    op, out = p.case.OP, {}
    chunks = (None, 128, 256, 512, 1024) if op != "upconvert-gather" else (None,)
    for tokens in (2, 4, 8, 16, 32):
        for warps in (2, 4, 8):
            for chunk in chunks:
                name = f"{tokens} tok/{warps} w" + (f", chunk {chunk}" if chunk else "")
                if op == "upconvert-gather":
                    out[name] = (lambda w, t=tokens, n=warps: lambda: read_rows.upconvert_gather(
                        w.src_cache, w.dst, w.batch.block_table, w.batch.cu_seq_lens, w.case.num_tokens,
                        w.batch.seq_starts, tokens=t, num_warps=n))
                    continue
                plain = op == "gather"  # gather: token_to_seq and dequantization; cp-gather: rows as they are
                out[name] = (lambda w, t=tokens, n=warps, ch=chunk, g=plain: lambda: gather.gather_rows(
                    w.src_cache, w.dst, w.batch.block_table, w.batch.cu_seq_lens, w.case.num_tokens,
                    w.batch.seq_starts, w.batch.token_to_seq if g else None, w.case.fp8_format if g else None,
                    w.scale if g else None, tokens=t, num_warps=n, chunk=ch))
    return out


COPY_ROW = "torch copy, same bytes (reference)"


def same_bytes_copy_us(case, samples: int = 15) -> float:
    """µs of a plain torch copy moving the case's bytes (half read, half written, contiguous), with as many buffer
    pairs rotated as the case's own cold rotation: what a copy of this size reaches here, its ramp-up and tail
    included, where the copy rate ("ideal") is measured on 1 GiB. Not a write of the op: no verification."""
    half = case.bytes_moved // 2
    pairs = [(torch.empty(half, dtype=torch.uint8, device="cuda").random_(0, 256),
              torch.empty(half, dtype=torch.uint8, device="cuda")) for _ in range(rotation_size(case))]
    writers = [lambda s=s, d=d: d.copy_(s) for s, d in pairs]
    write = writers[0] if len(writers) == 1 else _round_robin(writers)
    return statistics.median(GraphSampler(write, min_calls=len(writers)).measure(samples)) * 1e6


def table(title, cases, variants, bw, copy_row: bool = False):
    """Each case's variants, verified then timed: µs, ideal / time (the fraction of the copy limit reached) and,
    where the sector model applies, sector ideal / time; with copy_row, a torch copy of each case's bytes beside them
    (same_bytes_copy_us)."""
    rows = []
    for case in cases:
        shape = (f"{case.num_heads}x{case.head_size} {case.layout}, {case.num_blocks} blocks, " if case.OP == "kv"
                 else "") + f"{case.slots} slots"

        def row(name, *cells, case=case, shape=shape):  # one row of the case, printed as it comes (kept if a time
            # limit cuts the table)
            rows.append((shape, case.kv_cache_dtype, case.num_tokens, case.l2, name, *cells))
            print("  row:", " | ".join(map(str, rows[-1])), flush=True)

        if copy_row and not (ONLY and not ONLY[0].search(COPY_ROW)):
            try:
                us = same_bytes_copy_us(case)
                row(COPY_ROW, f"{us:.2f}", f"{bw.ideal_s(case) * 1e6 / us:.3f}", "")
            except Exception as exc:  # (a rotation that cannot be cold here): shown, not fatal
                row(COPY_ROW, "failed", str(exc)[:80], "")
            torch.cuda.empty_cache()
        try:
            p = prepare(case, "triton")
        except Exception as exc:  # the default launch failed to verify or to fit: the case's row says so
            row("default", "failed", str(exc)[:120], "")
            continue
        ideal_us = bw.ideal_s(case) * 1e6
        sector = sectors.sector_bytes(case)
        sector_us = sector / bw.bytes_per_s * 1e6 if sector else None
        for name, bind in variants(p).items():
            if ONLY and not ONLY[0].search(name):
                continue
            try:
                us = timed(p, bind, compare=REFERENCE_COMPARE.get(name, "exact"))
                row(name, f"{us:.2f}", f"{ideal_us / us:.3f}", f"{sector_us / us:.3f}" if sector_us else "")
            except Exception as exc:  # a variant that does not compile or verify: shown, not fatal
                row(name, "failed", str(exc)[:80], "")
        del p
        torch.cuda.empty_cache()
    print(f"\n{title}")
    print(tabulate(rows, ["shape", "kv", "tokens", "L2", "variant", "µs", "ideal/time", "sector ideal/time"],
                   tablefmt="github"), flush=True)


SECTOR_CHECK_REGIONS = (512 << 20, 8 << 30)  # bytes: a region far past the L2, and one as large as the paged
# 128 x 128 bf16 value cache of 16384 blocks (the yardstick's case), its pieces spread over as many pages


def sector_check(bw, regions: tuple[int, ...] = SECTOR_CHECK_REGIONS, samples: int = 15, device: str = "cuda"):
    """The sector model against the GPU: a whole fill of a region (32 bytes per sector written) and a write of
    2 bytes into each of its 32-byte sectors (the paged value cache's pattern: the model counts 64 bytes per sector,
    read for ownership then written, plus the source read), in order and by 4 KiB pieces in a random order (as
    random slots write a paged value cache), and fills of 16 bytes of each sector or of every 2nd, 4th or 8th (the
    paged bf16 key cache's pieces, of a block's tokens or of one token) and of a whole sector in every 8th, each
    timed in a CUDA graph; for each region size in turn."""
    for region_bytes in regions:  # (a table each, printed as it comes: a later region's failure loses nothing)
        try:
            rows = _sector_rows(bw, region_bytes, samples, device)
        except torch.cuda.OutOfMemoryError as exc:
            rows = [("(the region)", region_bytes >> 20, "failed", str(exc)[:60], "")]
        torch.cuda.empty_cache()
        print(f"\nsector model check (a region's sectors written whole or in part: {region_bytes >> 20} MiB)")
        print(tabulate(rows, ["write", "MiB", "µs", "model µs at copy rate", "measured / model"], tablefmt="github"),
              flush=True)


def _sector_rows(bw, region_bytes: int, samples: int, device: str) -> list[tuple]:
    """sector_check's rows for one region size."""
    region = torch.empty(region_bytes // 2, dtype=torch.bfloat16, device=device)
    column = region.view(-1, 16)[:, 0]  # one bf16 element in each 32-byte sector
    source = torch.randn(column.numel(), device=device).to(torch.bfloat16)
    sectors_n = region_bytes // sectors.SECTOR
    # the same 2 bytes a sector, its 4 KiB pieces (a paged block's value rows of one head, 128 x 16 bf16) taken in a
    # random order, as random slots take them
    pieces = region.view(-1, 128, 16)
    order = torch.randperm(pieces.shape[0], device=device)
    scattered = source.view(-1, 128)
    sector_elements = sectors.SECTOR // 2
    writes = [("whole fill", lambda: region.fill_(1.0), region_bytes),
              ("2 B per sector", lambda: column.copy_(source), sectors_n * 2 * sectors.SECTOR + source.numel() * 2),
              ("2 B per sector, 4 KiB pieces in random order",
               lambda: pieces.__setitem__((order, slice(None), 0), scattered),
               sectors_n * 2 * sectors.SECTOR + source.numel() * 2)]
    # 16 bytes (the paged bf16 key's x-chunks) of every sector, or of every 2nd, 4th, 8th (256 bytes apart: one
    # token's chunks where no other token of its block writes the rest), and a whole sector in every 8th: where
    # the model undercounts lone sectors (fourteenth session: notes/triton.md)
    for every, size in ((1, 16), (2, 16), (4, 16), (8, 16), (8, 32)):
        view = region.view(-1, every * sector_elements)[:, :size // 2]
        apart = f"{size} B per {every} sectors ({every * sectors.SECTOR} B apart)"
        name = f"{size} B per sector" if every == 1 else apart
        writes.append((name, lambda v=view: v.fill_(1.0),
                       sectors_n // every * (1 if size == sectors.SECTOR else 2) * sectors.SECTOR))
    rows = []
    for name, write, model_bytes in writes:
        try:
            us = statistics.median(GraphSampler(write).measure(samples)) * 1e6
        except Exception as exc:  # (a write torch cannot capture here): shown, not fatal
            rows.append((name, region_bytes >> 20, "failed", str(exc)[:60], ""))
            continue
        model_us = model_bytes / bw.bytes_per_s * 1e6
        rows.append((name, region_bytes >> 20, f"{us:.1f}", f"{model_us:.1f}", f"{us / model_us:.2f}"))
    return rows


def _served_decode_case(implementation: str, heads: int, size: int):
    """A 64-token fp8 decode batch (padded) of heads x size, as scripts/served_table.py makes its case: the served
    layout of the vLLM loaded here, a cache of the table's size."""
    import served_table  # (scripts/, beside this script)
    from kvbench.runner import served_case

    return served_case(implementation, "kv", served_table.SLOTS_PER_CACHE, num_tokens=64, kv_cache_dtype="fp8",
                       slots="decode-padded", num_heads=heads, head_size=size)


def decode_two_ways(bw, samples: int = 15):
    """The as-served table's 64-token fp8 decode cases, made as scripts/served_table.py makes them (the served
    layout of the vLLM loaded here, its cache of 16384 x 16 slots), each implementation timed twice: as the tuning
    tables time a variant (`timed`) and through kvbench.runner.run_case, as the as-served table does. On an H100
    (2026-12-06) the as-served table read kvbench's write 0.16 µs slower at 4 and 8 KV heads than the decode table
    did, vLLM's Triton op alike in both, the cache's size not the cause. This table (eleventh session) found the two
    paths within 0.015 µs of each other; the as-served table's rows were bimodal (notes/triton.md)."""
    from kvbench.runner import run_case

    rows = []
    for heads, size in ((8, 128), (4, 128), (8, 64), (128, 128), (1, 128)):
        for implementation in ("triton", "vllm-triton"):
            try:
                case = _served_decode_case(implementation, heads, size)
                p = prepare(case, implementation)
                tuned = f"{timed(p, p.impl.bind, samples, p.impl.compare):.3f}"
                del p
                r = run_case(case, implementation, "cudagraph", samples, bw)
                served = f"{r.latency_us:.3f}" if r.status == "ok" else f"{r.status}: {r.message[:60]}"
                row = (f"{heads}x{size} {case.layout}, block {case.block_size}, {case.num_blocks} blocks",
                       implementation, tuned, served)
            except Exception as exc:  # not loaded here, or a case this vLLM cannot serve: shown, not fatal
                row = (f"{heads}x{size}", implementation, "failed", str(exc)[:80])
            rows.append(row)
            print("  row:", " | ".join(row), flush=True)
            torch.cuda.empty_cache()
    print("\n64-token fp8 decode batches as served, timed two ways (µs)")
    print(tabulate(rows, ["shape", "implementation", "tuning tables' timing", "as-served table's timing (run_case)"],
                   tablefmt="github"), flush=True)


def _medians_by(values, n: int) -> str:
    """The medians of each n values in turn: how a row's samples move through a measurement."""
    return " ".join(f"{statistics.median(values[i:i + n]):.2f}" for i in range(0, len(values), n))


def decode_rounds(bw, rounds: int = 12, samples: int = 3):
    """The as-served table's 64-token fp8 decode cases again (as decode_two_ways makes them), kvbench's write in
    several launches and vLLM's Triton op, each one graph captured once, then sampled in interleaved rounds (the
    order turned each round) with the SM clock read after each: whether a variant's level drifts within a run
    while vLLM's op stays flat (the as-served table's bimodal rows, H100 2026-12-06), and which launch is steady."""
    from kvbench.measure.gpu_state import gpu_state

    sm = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []
    for heads, size in ((8, 128), (8, 64), (4, 128), (128, 128)):
        samplers, keep = {}, []
        for implementation in ("triton", "vllm-triton"):
            try:
                p = prepare(_served_decode_case(implementation, heads, size), implementation)
            except Exception as exc:  # not loaded here: the other rows stay
                print(f"  {heads}x{size} {implementation}: {str(exc)[:80]}", flush=True)
                continue
            keep.append(p)
            if implementation != "triton":
                samplers[VLLM_TRITON] = GraphSampler(p.impl.bind(p.workloads[0]))  # (one input set, as kvbench's)
                continue
            default = cache_write.launch_config(64, heads, size, sm, True)
            configs = {"default": default, "default, evict_first": {**default, "EVICT": "evict_first"},
                       "default, slot first": {**default, "LOAD_FIRST": False}, "default, DIV 1": {**default, "DIV": 1}}
            configs.update({f"default, {w} w": {**default, "num_warps": w} for w in (2, 4, 8, 16)
                            if w != default["num_warps"]})
            for name, bind in _flash_writers(configs).items():
                write = bind(p.workloads[0])
                verify("variant", p.workloads[:1], write, "exact")
                samplers[name] = GraphSampler(write)
        if not samplers:
            continue
        times = {name: [] for name in samplers}
        clocks = []
        names = list(samplers)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name] += samplers[name].measure(samples)
            state = gpu_state() or {}
            clocks.append(state.get("sm_clock_mhz"))
        print(f"  {heads}x{size}: SM clock after each round {clocks}", flush=True)
        for name, t in times.items():
            us = [x * 1e6 for x in t]
            rows.append((f"{heads}x{size}", name, f"{statistics.median(us):.3f}", f"{min(us):.3f}", f"{max(us):.3f}",
                         _medians_by(us, samples)))
            print("  row:", " | ".join(rows[-1]), flush=True)
        del samplers, keep
        torch.cuda.empty_cache()
    print("\n64-token fp8 decode batches as served, interleaved rounds (µs; a round's median each)")
    print(tabulate(rows, ["shape", "variant", "median", "min", "max", "by round"], tablefmt="github"), flush=True)


def _tile_2048(c: dict, num_tokens: int, heads: int, sm: int) -> dict:
    """Programs of up to 2048 elements of a token (vLLM's Triton op's tile), 8 warps."""
    return {"BLOCK_H": min(triton.next_power_of_2(heads), max(c["BLOCK_H"], 2048 // c["BLOCK_D"])), "num_warps": 8}


def _before_small(c: dict, num_tokens: int, heads: int, sm: int) -> dict:
    """A small fp8 batch's launch before 8bae977 (2026-12-06): evict_first, 8 warps where the grid is at most a
    program per SM (a decode batch: whole tokens) and a program under 1024 elements."""
    one_each = num_tokens * triton.cdiv(heads, c["BLOCK_H"]) <= sm and c["BLOCK_H"] * c["BLOCK_D"] < 1024
    return {"EVICT": "evict_first", "num_warps": 8 if one_each else c["num_warps"]}


SERVED_WAY_VARIANTS = {  # name: the launch overlaid on kvbench's default (its config, tokens, heads and SMs in, a
    # dict out)
    "default": lambda c, *_: {},
    "evict_first": lambda c, *_: {"EVICT": "evict_first"},
    "no hint": lambda c, *_: {"EVICT": ""},
    "before 8bae977 (evict_first, 8 w)": _before_small,
    "2 w": lambda c, *_: {"num_warps": 2},
    "8 w": lambda c, *_: {"num_warps": 8},
    "slot first": lambda c, *_: {"LOAD_FIRST": False},
    "loads first": lambda c, *_: {"LOAD_FIRST": True},
    "2048 el/8 w": _tile_2048,
    "2048 el/8 w, evict_first": lambda *a: {**_tile_2048(*a), "EVICT": "evict_first"},
}


def decode_served_way(bw, device: str = "cuda", rounds: int = 2, variants=SERVED_WAY_VARIANTS):
    """The as-served table's 64-token fp8 decode rows measured as scripts/served_table.py measures them (its cases,
    its path, one implementation after another: vLLM's Triton op, then kvbench's write in each launch variant, the
    variant overlaid on kvbench's default by wrapping launch_config; a variant whose launch equals an earlier one's
    is measured once), in `rounds` rounds. In the table (H100, 2026-12-06) kvbench's rows with the fp8 `evict_first`
    hint sat at 1.45-1.51 µs in one measurement and 1.56-1.66 in the next, or stepped between the two within one;
    without the hint they held, within 0.01 µs (thirteenth session; from it, 8bae977). This compares launches where
    the table's numbers are made. (`device` cpu: a dry run, the GPU kernels skipping.)"""
    import served_table  # (scripts/, beside this script)
    from kvbench.ops import models

    plan = served_table.Plan(device, [("decode-padded", 64)], served_table.SLOTS_PER_CACHE, 30, bw)
    default_config = cache_write.launch_config
    sm = cache_write._sm_count(0 if device == "cuda" else None)
    rows = []
    try:
        for turn in range(rounds):
            for name, tp in served_table.PRESETS:
                op, shapes = models.get(name).fields(tp)
                config = default_config(64, shapes["num_heads"], shapes["head_size"], sm, True)
                launches = {}  # a variant whose launch equals an earlier one's is measured once
                for variant in (VLLM_TRITON, *variants):
                    overlay = variants.get(variant)
                    if overlay is not None:
                        launch = tuple(sorted({**config, **overlay(config, 64, shapes["num_heads"], sm)}.items()))
                        if launch in launches:
                            print(f"  row: {turn} | {name} | {variant} = {launches[launch]}", flush=True)
                            continue
                        launches[launch] = variant

                        def overlaid(num_tokens, num_heads, head_size, sm_count, *a, _o=overlay, **k):
                            base = default_config(num_tokens, num_heads, head_size, sm_count, *a, **k)
                            return {**base, **_o(base, num_tokens, num_heads, sm_count)}
                        cache_write.launch_config = overlaid  # (looked up at each call of the kernel's launcher)
                    implementation = "triton" if overlay is not None else "vllm-triton"
                    case = served_table.case_for(plan, implementation, op, shapes, 64, "decode-padded", "fp8", True)
                    r = served_table.measure(plan, case, implementation)
                    cache_write.launch_config = default_config
                    samples = r["samples_us"] or []
                    cells = ((f"{r['latency_us']:.3f}", f"{min(samples):.3f}", f"{max(samples):.3f}",
                              _medians_by(samples, 6),
                              (r["gpu_state"] or {}).get("sm_clock_mhz"))
                             if r["status"] == "ok" else (r["status"], "", "", "", ""))
                    rows.append((turn, name, variant, *cells))
                    print("  row:", " | ".join(map(str, rows[-1])), flush=True)
    finally:
        cache_write.launch_config = default_config
    print("\nthe as-served table's 64-token fp8 decode rows measured its way, kvbench's launches beside vLLM's Triton "
          "op (µs)")
    print(tabulate(rows, ["round", "model", "variant", "median", "min", "max", "by 6 samples in order",
                          "SM MHz after"], tablefmt="github"), flush=True)


TABLES = ("flash", "served", "main", "decode", "decode-cache", "decode-rounds", "decode-served-way", "mla",
          "mla-decode", "indexer", "paged", "sectors", "gathers")
ONLY: list[re.Pattern] = []  # --only


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--quick", action="store_true", help="fewer token counts")
    args.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated, of: {', '.join(TABLES)}")
    args.add_argument("--only", help="a regular expression: only the variants whose names match it")
    parsed = args.parse_args()
    if parsed.only:
        try:
            ONLY.append(re.compile(parsed.only))
        except re.error as exc:
            args.error(f"--only {parsed.only!r} is not a regular expression ({exc})")
    chosen = parsed.tables.split(",")
    unknown = [t for t in chosen if t not in TABLES]
    if unknown:
        args.error(f"unknown table {unknown[0]!r}; choose from: {', '.join(TABLES)}")
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    bw = bandwidth.CopyBandwidth(bandwidth.measure_copy("cuda"), "measured now")
    print(f"copy bandwidth {bw.bytes_per_s / 1e9:.1f} GB/s", flush=True)
    tokens = [16384, 65536] if parsed.quick else [4096, 16384, 65536]
    if "flash" in chosen:
        table("flash NHD", [make_case("triton", "nhd", num_tokens=n, kv_cache_dtype=kv, l2=l2)
                            for kv in ("auto", "fp8") for n in tokens for l2 in ("warm", "cold")], flash_variants, bw)
    if "served" in chosen:
        table("served layout (nhd-packed, block 64), 8 and 4 KV heads x 128 (4: 512-element tokens, as Qwen3-MoE's)",
              [make_case("triton", "nhd-packed", num_tokens=n, num_heads=h, block_size=64, num_blocks=4096,
                         kv_cache_dtype=kv) for h in (8, 4) for kv in ("auto", "fp8") for n in (2048, 8192, 65536)],
              flash_variants, bw)
    if "main" in chosen:  # vLLM's benchmark shape at mid sizes, where vLLM's Triton op led kvbench's fp8 write
        # (H100, 2026-12-05: 9.56 against 6.13 us at 256 tokens)
        table("vLLM's benchmark shape (128 x 128 nhd, random slots) at mid sizes",
              [make_case("triton", "nhd", num_tokens=n, kv_cache_dtype=kv) for kv in ("auto", "fp8")
               for n in (256, 1024, 4096)], flash_variants, bw)
    if "decode" in chosen:  # the H100's served table (2026-12-05): fp8 up to 1.4-1.8x vLLM's Triton op here
        table("served decode batches (nhd-packed, block 64, padded to vLLM's CUDA graphs)",
              [make_case("triton", "nhd-packed", num_tokens=n, num_heads=h, block_size=64, num_blocks=1024,
                         slots="decode-padded", kv_cache_dtype=kv)  # a block per sequence: 512 would do
               for h in (1, 4, 8, 128) for kv in ("auto", "fp8") for n in (64, 512)], flash_variants, bw)
    if "decode-cache" in chosen:
        decode_two_ways(bw)
    if "decode-rounds" in chosen:
        decode_rounds(bw)
    if "decode-served-way" in chosen:
        decode_served_way(bw)
    if "mla" in chosen:
        table("MLA (random slots; prefill: consecutive slots, cold, where DRAM pages are written whole)",
              [make_case("triton", op="mla", num_tokens=n, kv_cache_dtype=kv, l2=l2, num_blocks=8192, slots=slots)
               for kv in ("auto", "fp8", "fp8_ds_mla") for n in tokens for l2 in ("cold", "warm")
               for slots in ("random", "prefill") if (l2 == "cold" or n == 65536) and (slots == "random" or
                                                                                      (l2 == "cold" and n >= 16384))],
              mla_variants, bw, copy_row=True)
    if "mla-decode" in chosen:  # DeepSeek's decode batches: the served table's MLA rows
        table("MLA decode batches (padded to vLLM's CUDA graphs)",
              [make_case("triton", op="mla", num_tokens=n, kv_cache_dtype=kv, slots="decode-padded", num_blocks=1024)
               for kv in ("auto", "fp8", "fp8_ds_mla") for n in (64, 512)], mla_variants, bw)
    if "indexer" in chosen:
        table("indexer", [make_case("triton", op="indexer", num_tokens=n) for n in [1024] + tokens],
              indexer_variants, bw)
    if "paged" in chosen:
        table("paged (random slots; prefill: consecutive slots, where slot order costs only the argsort)",
              [make_case("triton", "paged", num_tokens=n, num_heads=h, kv_cache_dtype=kv, slots=slots)
               for h in (128, 8) for n in (1024, 16384) for kv in ("auto", "fp8")
               for slots in ("random", "prefill") if slots == "random" or n == 16384], paged_variants, bw)
    if "sectors" in chosen:
        sector_check(bw)
    if "gathers" in chosen:
        table("gathers (the yardstick: >= 85 % of the copy rate)",
              [make_case("triton", op=op, num_tokens=65536, **fields)  # the yardstick's size
               for op, fields in (("gather", {"kv_cache_dtype": "auto"}), ("gather", {"kv_cache_dtype": "fp8"}),
                                  ("cp-gather", {}), ("upconvert-gather", {}))], gather_variants, bw)


if __name__ == "__main__":
    main()
