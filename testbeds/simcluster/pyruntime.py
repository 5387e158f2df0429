"""A real, minimal python3 for the test images: the host's system interpreter, the shared
libraries `ldd` names for it and the few stdlib files its start-up reads, placed at the same
absolute paths (about 10 MB). The version probes then really parse and run their Python against
the stub torch/vllm/transformers packages (assets/site), so a probe with a syntax error or a
wrong attribute fails as it would in the real image."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .layout import SimClusterError

# What the interpreter reports at start-up: the module files it loaded, its site directory.
_LIST = ("import site, sys; print(site.getsitepackages()[0]); "
         "print(*sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, '__file__', None)}), "
         "sep='\\n')")


@dataclass(frozen=True)
class Runtime:
    executable: str  # absolute path of the real binary (same path inside the image)
    files: tuple[str, ...]  # absolute host paths copied as is: binary, libraries, stdlib files
    links: tuple[tuple[str, str], ...]  # (path, target): the names ldd uses for those libraries
    dirs: tuple[str, ...]  # empty directories the interpreter looks for (lib-dynload)
    site: str  # where the stub packages go: the interpreter's first site directory


def _interpreter() -> str:
    found = shutil.which("python3", path="/usr/bin:/bin")
    if not found:
        raise SimClusterError("test images need the system python3 (/usr/bin/python3): apt-get install python3")
    return os.path.realpath(found)


@functools.cache
def runtime() -> Runtime:
    exe = _interpreter()
    ldd = subprocess.run(["ldd", exe], capture_output=True, text=True, check=True).stdout
    libs = re.findall(r"(?:=>\s*)?(/\S+)\s+\(0x", ldd)
    out = subprocess.run([exe, "-I", "-c", _LIST], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.split("\n")
    site, loaded = out[0], [p for p in out[1:] if p]
    stdlib = os.path.dirname(next(p for p in loaded if p.endswith("/os.py")))
    mods = [p for p in loaded if p.startswith(stdlib + "/") and "-packages" not in p
            and not p.endswith("/sitecustomize.py") and os.path.isfile(p)]
    files = sorted({exe, *(os.path.realpath(lib) for lib in libs), *mods})
    links = sorted({(lib, os.path.realpath(lib)) for lib in libs if os.path.realpath(lib) != lib})
    return Runtime(exe, tuple(files), tuple(links), (f"{stdlib}/lib-dynload",), site)


def digest_parts() -> list[bytes]:
    """What an image key must cover: the interpreter's files (a host upgrade is a new image)."""
    rt = runtime()
    return [Path(f).read_bytes() for f in rt.files] + [rt.site.encode()]
