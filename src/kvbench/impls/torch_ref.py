"""`torch`: each op's reference in plain torch ops, every layout, dtype and device.

It is also the baseline a user would write by hand (quantize, then one indexed copy per cache), and it can be
captured in a CUDA graph (padding is skipped without a host sync; kvbench.ops.kv.reference_write).
"""

from __future__ import annotations

from kvbench.impls.base import Implementation, Writer
from kvbench.ops import layouts
from kvbench.ops.kv import KVWorkload, reference_write


class TorchReference(Implementation):
    name = "torch"
    description = "reference in plain torch ops (quantize + indexed copy); the hand-written baseline"
    devices = ("cuda", "cpu")
    layouts = ("nhd",) + tuple(layout for layout in layouts.LAYOUTS if layout != "nhd")
    per_head_scales = True

    def bind(self, w: KVWorkload) -> Writer:
        def run():
            reference_write(w.case, w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.k_scale, w.v_scale)

        return run
