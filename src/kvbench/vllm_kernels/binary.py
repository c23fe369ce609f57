"""What a compiled library needs, read from its bytes: the GPU architectures its fatbins hold code for and the
CUDA major version it links against.

CUDA libraries embed fatbins: containers that start with the little-endian magic 0xBA55ED50, a 2-byte header size
at +6 and an 8-byte payload size at +8. The payload is a run of entries, each with kind (u16; 1 = PTX, 2 = cubin),
version (u16) and header size (u32), an 8-byte payload size at +8 and the SM architecture (u32, 10 * major +
minor) at +28. The CUDA runtime a library needs shows in its dynamic section as `libcudart.so.<major>`.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

MAGIC = struct.pack("<I", 0xBA55ED50)
PTX, CUBIN = 1, 2
CUDART = re.compile(rb"libcudart\.so\.(\d+)\x00")


@dataclass(frozen=True)
class GpuCode:
    """SM architectures (10 * major + minor) with compiled code (cubins) and with PTX."""

    cubins: tuple[int, ...] = ()
    ptx: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.cubins or self.ptx)

    def runs_on(self, major: int, minor: int) -> bool:
        """A cubin runs on its major version at the same or a later minor; PTX is compiled for any later GPU."""
        return any(a // 10 == major and a % 10 <= minor for a in self.cubins) or \
            any(a <= 10 * major + minor for a in self.ptx)

    def describe(self) -> str:
        text = " ".join(f"sm_{a}" for a in self.cubins) or "no cubins"
        return text + (f"; PTX {' '.join(f'sm_{a}' for a in self.ptx)}" if self.ptx else "")


def _entries(data: bytes | bytearray, start: int, end: int):
    """(kind, arch, payload start, payload size) of each entry of one container's payload data[start:end]."""
    while start + 32 <= end:
        kind, _, header = struct.unpack_from("<HHI", data, start)
        size, = struct.unpack_from("<Q", data, start + 8)
        if header < 32:
            return
        yield kind, struct.unpack_from("<I", data, start + 28)[0], start + header, size
        start += header + size


def _containers(data: bytes | bytearray):
    """(payload start, payload end) of every fatbin container in `data`."""
    pos = data.find(MAGIC)
    while pos >= 0:
        header, = struct.unpack_from("<H", data, pos + 6)
        size, = struct.unpack_from("<Q", data, pos + 8)
        end = pos + header + size
        if header >= 16 and end <= len(data):
            yield pos + header, end
            pos = data.find(MAGIC, end)
        else:  # the magic's bytes by chance, not a container
            pos = data.find(MAGIC, pos + 4)


def gpu_code(data: bytes) -> GpuCode:
    """The architectures of every fatbin container in `data` (a library's bytes)."""
    cubins, ptx = set(), set()
    for start, end in _containers(data):
        for kind, arch, _, _ in _entries(data, start, end):
            (cubins if kind == CUBIN else ptx if kind == PTX else set()).add(arch)
    return GpuCode(tuple(sorted(cubins)), tuple(sorted(ptx)))


def cuda_major(data: bytes) -> int | None:
    """The major version of the CUDA runtime the library links (libcudart.so.N), None if it links none."""
    found = CUDART.search(data)
    return int(found.group(1)) if found else None


def keep_only(data: bytearray, arch: int) -> GpuCode:
    """Zero, in place, the payload of every fatbin entry that is not for `arch` (cubins and PTX alike): the file
    keeps its layout and loads as before on that GPU, and compresses to a fraction (vLLM 0.34's library: about
    60 MB to 16 MB with xz). Returns what is left."""
    for start, end in _containers(data):
        for _, entry_arch, payload, size in list(_entries(data, start, end)):
            if entry_arch != arch:
                data[payload:payload + size] = bytes(size)
    code = gpu_code(data)  # (the entries' headers are kept: only this arch's have a payload left)
    return GpuCode(tuple(a for a in code.cubins if a == arch), tuple(a for a in code.ptx if a == arch))
