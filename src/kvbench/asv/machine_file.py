"""asv's machine file, written without questions and with the GPU and library versions in it.

asv's machine file has no GPU field, but its free-text fields travel into every result file and onto the site, and
the machine *name* is what the site selects by. So the name carries the GPU model (one name per host and GPU),
`cpu` carries the GPU's model, SMs, memory, driver and CUDA, and `os` carries torch, Triton and vLLM versions.
Rewrite it before each run (scripts/bench.sh does) so that version changes show in the results.
"""

from __future__ import annotations

import os
import platform
import re
import socket

from kvbench.measure import machine


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def describe(facts: dict) -> dict[str, str]:
    """asv machine fields (machine, arch, cpu, os, num_cpu, ram) for the device described by `facts`."""
    host = _slug(socket.gethostname()) or "host"
    cpu = facts["host_cpu"]
    name = host
    if facts["device"] == "cuda":
        name = f"{host}-{_slug(facts['device_name'])}"
        cpu = (f"{cpu} | GPU {facts['device_name']}, {facts['sm_count']} SMs, {facts['memory_gib']} GiB, "
               f"driver {facts.get('driver', '?')}, CUDA {facts['cuda']}")
    versions = ", ".join(f"{k} {facts[k]}" for k in ("torch", "triton", "vllm") if facts.get(k))
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return dict(machine=name, arch=platform.machine(), cpu=cpu,
                os=f"{platform.system()} {platform.release()} | {versions}", num_cpu=str(os.cpu_count()),
                ram=str(ram))


def write(device: str, name: str | None = None) -> dict[str, str]:
    """Write (or update) this machine's entry in asv's machine file (~/.asv-machine.json); return its fields.

    asv's own API is used: `asv machine --yes --machine NAME` fails when NAME is the host's default name and no
    machine file exists yet (asv 0.6.6 drops the name as "unchanged").
    """
    from asv.machine import MachineCollection

    fields = describe(machine.info(device))
    if name:
        fields["machine"] = name
    MachineCollection.save(fields["machine"], dict(fields))
    return fields
