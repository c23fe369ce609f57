"""Is this GPU in a state worth timing? Clocks, throttle reasons and other processes, read through NVML.

Read right after a case is measured (clocks of an idle GPU say nothing), recorded with the result, and turned into
loud warnings when the numbers should not be trusted: another process on the GPU, thermal or power throttling,
or an SM clock under 75 % of its maximum (nvbench's rule for dropping samples).
"""

from __future__ import annotations

import os

# NVML clock-event (throttle) reason bits that make a timing untrustworthy; idle and application-clock settings
# are not among them.
BAD_REASONS = {
    0x4: "software power cap",
    0x8: "hardware slowdown",
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x80: "hardware power brake",
}
MIN_CLOCK_FRACTION = 0.75


def nvml_index(cuda_index: int = 0) -> int:
    """NVML's index of CUDA device `cuda_index`: NVML sees every GPU, CUDA only those in CUDA_VISIBLE_DEVICES."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if cuda_index < len(visible) and visible[cuda_index].isdigit():
        return int(visible[cuda_index])
    return cuda_index


def gpu_state(index: int = 0) -> dict | None:
    """SM/memory clocks, temperature, power, active bad throttle reasons and other processes of CUDA device `index`;
    None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no nvidia-ml-py or no driver: nothing to read
        return None
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(nvml_index(index))
        reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        mask = reasons(h)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        return {
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": round(pynvml.nvmlDeviceGetPowerUsage(h) / 1000, 1),
            "throttle": [name for bit, name in BAD_REASONS.items() if mask & bit],
            "other_processes": sorted(p.pid for p in procs if p.pid != os.getpid()),
        }
    except Exception as exc:  # an NVML call this driver does not support
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        pynvml.nvmlShutdown()


def warnings(state: dict | None) -> list[str]:
    """Why a measurement taken in `state` should not be trusted (empty if nothing is wrong or nothing is known)."""
    if not state or "error" in state:
        return []
    out = []
    if state["other_processes"]:
        out.append(f"other processes on the GPU: pids {state['other_processes']}")
    if state["throttle"]:
        out.append(f"GPU throttled: {', '.join(state['throttle'])}")
    if state["sm_clock_mhz"] < MIN_CLOCK_FRACTION * state["max_sm_clock_mhz"]:
        out.append(f"SM clock {state['sm_clock_mhz']} MHz is under {MIN_CLOCK_FRACTION:.0%} of its "
                   f"maximum {state['max_sm_clock_mhz']} MHz")
    return out
