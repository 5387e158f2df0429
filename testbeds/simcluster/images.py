"""Small, deterministic container images for the simulated nodes (no registry on this machine).

An image is a busybox rootfs plus a real, minimal python3 (pyruntime.py) and stub `torch`, `vllm`
and `transformers` packages (assets/site) that report the versions in `/etc/gx10-versions`.
The tarball is byte-for-byte reproducible and its file mtime is pinned, because `podman import`
stamps the image's `created` time from the tarball's mtime: the same tarball imported on any node
then yields the same image ID, as `docker save | docker load` would.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import pyruntime

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

ASSETS = Path(__file__).parent / "assets"
BUSYBOX = Path(shutil.which("busybox") or "/bin/busybox")
EPOCH = 1_767_225_600  # 2026-01-01: fixed mtime for every member and for the tarball itself
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMPORT_CHANGES = ("--change", f"ENV PATH={IMAGE_PATH}", "--change", 'CMD ["/bin/sh"]')
_CHUNK = 1 << 20
DIRS = [("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o555),
        ("root", 0o700), ("run", 0o755), ("srv", 0o755), ("sys", 0o555),
        ("tmp", 0o1777), ("opt", 0o755), ("usr", 0o755), ("usr/bin", 0o755),
        ("usr/lib", 0o755), ("usr/local", 0o755),
        ("usr/local/bin", 0o755), ("var", 0o755), ("var/tmp", 0o1777)]


@dataclass(frozen=True)
class ImageSpec:
    """What a test image reports; `cuda=None` models a CPU-only (regressed) torch build."""

    torch: str = "2.11.0+cu130"
    cuda: str | None = "13.0"
    vllm: str = "0.22.1rc1.dev124+gace95c9cf.d20260603"
    transformers: str = "5.0.0"
    extra_bytes: int = 0

    def versions_table(self) -> str:
        rows = {
            "torch.__version__": self.torch,
            "torch.version.cuda": self.cuda or "None",
            "torch.cuda.is_available()": "True" if self.cuda else "False",
            "vllm.__version__": self.vllm,
            "transformers.__version__": self.transformers,
        }
        return "".join(f"{k}\t{v}\n" for k, v in rows.items())

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode() + BUSYBOX.read_bytes()
        for asset in sorted(p for p in ASSETS.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            blob += str(asset.relative_to(ASSETS)).encode() + asset.read_bytes()
        blob += b"".join(pyruntime.digest_parts())
        return hashlib.sha256(blob).hexdigest()[:16]


def normalize(name: str) -> str:
    """podman's name for a locally created image: `localhost/NAME:TAG`."""
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name if "/" in name else f"localhost/{name}"


def _info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, EPOCH
    info.uname = info.gname = "root"
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    tar.addfile(_info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))


class _SeededRandom(io.RawIOBase):
    """Incompressible yet reproducible filler, streamed so a 1 GiB image needs no 1 GiB buffer."""

    def __init__(self, size: int, seed: str) -> None:
        self._left, self._rng = size, random.Random(seed)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._left, _CHUNK)
        view[:n] = self._rng.randbytes(n)
        self._left -= n
        return n


def _applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    return sorted(set(out.stdout.split()) - {"busybox", "python3", "python"})


def _add_python(tar: tarfile.TarFile) -> None:
    """The real interpreter at its host paths, `python3`/`python` beside it, the stubs on its path."""
    rt = pyruntime.runtime()
    site = ASSETS / "site"
    stubs = sorted(p for p in site.rglob("*.py") if "__pycache__" not in p.parts)
    made = {d for d, _ in DIRS}  # written by write_rootfs already
    paths = [*rt.files, *(link for link, _ in rt.links), *(f"{d}/x" for d in rt.dirs),
             *(f"{rt.site}/{p.relative_to(site)}" for p in stubs)]
    for path in sorted(paths):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                made.add(d)
                tar.addfile(_info(d, tarfile.DIRTYPE, 0o755))
    for f in rt.files:
        _add_bytes(tar, f.lstrip("/"), Path(f).read_bytes(), os.stat(f).st_mode & 0o755)
    for link_path, target in rt.links:
        link = _info(link_path.lstrip("/"), tarfile.SYMTYPE, 0o777)
        link.linkname = target
        tar.addfile(link)
    for stub in stubs:
        _add_bytes(tar, f"{rt.site.lstrip('/')}/{stub.relative_to(site)}", stub.read_bytes())
    for name in ("usr/bin/python3", "usr/bin/python"):
        if name.lstrip("/") != rt.executable.lstrip("/"):
            link = _info(name, tarfile.SYMTYPE, 0o777)
            link.linkname = rt.executable
            tar.addfile(link)


def write_rootfs(path: Path, spec: ImageSpec) -> Path:
    """Write the rootfs tarball for `spec` to `path` (reproducible bytes, pinned mtime)."""
    tmp = path.with_suffix(".partial")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for d, mode in DIRS:
            tar.addfile(_info(d, tarfile.DIRTYPE, mode))
        _add_bytes(tar, "bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in _applets():
            link = _info(f"bin/{applet}", tarfile.SYMTYPE, 0o777)
            link.linkname = "busybox"
            tar.addfile(link)
        _add_python(tar)
        _add_bytes(tar, "etc/gx10-versions", spec.versions_table().encode())
        _add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add_bytes(tar, "etc/group", b"root:x:0:\n")
        if spec.extra_bytes:
            filler = _info("opt/extra.bin", tarfile.REGTYPE, 0o644, spec.extra_bytes)
            tar.addfile(filler, io.BufferedReader(_SeededRandom(spec.extra_bytes, spec.key())))
    os.utime(tmp, (EPOCH, EPOCH))
    tmp.rename(path)
    return path


def rootfs_for(cache_dir: Path, spec: ImageSpec) -> Path:
    """The cached rootfs tarball for `spec`, written on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"rootfs-{spec.key()}.tar"
    return path if path.exists() else write_rootfs(path, spec)
