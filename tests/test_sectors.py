"""The sector model (kvbench.ops.sectors): bytes counted in 32-byte sectors, read for ownership where a call writes
part of one. Checked against hand counts of the layouts' geometry."""

import pytest

from kvbench.ops import sectors
from kvbench.ops.kv import Case


def case(**fields):
    return Case(**{"device": "cpu", "num_blocks": 16384, **fields})


@pytest.mark.parametrize("layout", ["nhd", "hnd", "nhd-split", "nhd-packed", "hnd-packed"])
def test_whole_rows_cost_their_bytes(layout):
    c = case(num_tokens=1024, layout=layout)
    assert sectors.count(c) == c.bytes_moved  # every head's row is whole sectors: nothing read for ownership
    assert sectors.sector_bytes(c) is None  # and the sweep shows no second ideal for them


def test_paged_with_one_token_per_block_by_hand():
    """bf16, block 16, every token in a block of its own (decode slots): reads 2 rows of 2HD bytes; the key's
    16-byte chunks are half sectors (64 bytes each: 2HD / 16 chunks x 64 = 8HD); the value's 2-byte elements are
    1/16 of a sector each (HD sectors x 64 = 64HD)."""
    h, d = 128, 128
    c = case(num_tokens=64, layout="paged", slots="decode")
    per_token = 2 * 2 * h * d + (2 * h * d // 16) * 64 + h * d * 64
    assert sectors.sector_bytes(c) == 64 * per_token
    assert sectors.sector_bytes(c) / c.bytes_moved == pytest.approx(76 / 8)


def test_tokens_sharing_sectors_share_their_cost():
    """Prefill chunks fill their blocks: the key's chunks and the value's sectors are written whole but in the
    partial blocks where a chunk starts and ends (2 of a 512-token chunk's 33 blocks: a few % more)."""
    c = case(num_tokens=1024, layout="paged", slots="prefill")
    assert 1.0 < sectors.sector_bytes(c) / c.bytes_moved < 1.05
    sparse = case(num_tokens=1024, layout="paged")  # random slots: ~1 token per block
    dense = case(num_tokens=65536, layout="paged")  # ~4 tokens per block share each value sector
    assert sectors.sector_bytes(sparse) / sparse.bytes_moved > 9
    assert 2.5 < sectors.sector_bytes(dense) / dense.bytes_moved < 4


def test_fp8_chunks_and_values_are_partial_sectors():
    c = case(num_tokens=64, layout="paged", slots="decode", kv_cache_dtype="fp8")
    h, d = 128, 128  # key: 16 one-byte codes per chunk, half a sector (HD/16 x 64); value: a sector holds the 16
    # slots of two dims, of which the token writes one byte each (HD/2 sectors x 64)
    per_token = 2 * 2 * h * d + (h * d // 16) * 64 + (h * d // 2) * 64
    assert sectors.sector_bytes(c) == 64 * per_token
