"""Verification of images against the pinned versions (torch + CUDA, vLLM, transformers), recorded
on the head by image ID. The probes run against the ID, not the tag, so a record always speaks
about exactly the bytes that were checked; `distribute` refuses an ID whose record failed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from ..config import ImageSpec, Node
from ..facts import normalize_id
from ..remote import Cluster, Result
from ..shell import q, remote_path, utc_stamp
from .errors import ImagesError
from .select import Present, image_states, short

RECORD_DIR = "~/.gx10-ops/verified"
TORCH_CODE = "import torch; print(torch.__version__, torch.version.cuda)"
VLLM_CODE = "import vllm; print(vllm.__version__)"
TRANSFORMERS_CODE = "import transformers; print(transformers.__version__)"
PROBE_TIMEOUT_S = 900.0


@dataclass
class Judgement:
    """One pinned version judged in an image: what was expected, what was found, and, when they
    disagree, what it means and what to do (kept in the verification record as is)."""

    what: str
    expected: str
    got: str
    ok: bool
    meaning: str = ""

    def line(self) -> str:
        status = "OK  " if self.ok else "FAIL"
        text = f"{self.what} {self.got}" if self.ok else self.meaning
        return f"  {status}  {text}"


@dataclass
class Verdict:
    image: str
    tag: str
    node: str
    id: str  # normalized hex; empty when the node does not hold the image
    checks: list[Judgement] = field(default_factory=list)
    error: str = ""  # the probe could not run (unreachable, engine broken, image absent)
    verified_at: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.checks) and all(c.ok for c in self.checks)

    def report(self) -> str:
        head = f"{self.tag} on {self.node}" + (f" (ID {short(self.id)})" if self.id else "")
        if self.error:
            return f"{head}: FAIL  {self.error}"
        status = "OK" if self.ok else "FAILED"
        return "\n".join([f"{head}: {status}", *(c.line() for c in self.checks)])

    def failures(self) -> str:
        if self.error:
            return self.error
        return "; ".join(c.meaning for c in self.checks if not c.ok)


def probe_command(docker: str, image_ref: str, code: str) -> str:
    """The seed's check: run python3 in the image itself, nothing else started."""
    return f"{q(docker)} run --rm --entrypoint python3 {q(image_ref)} -c {q(code)}"


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: '5.0.0rc1' -> (5, 0, 0); enough to compare."""
    m = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()


def at_least(version: str, minimum: str) -> bool:
    got, want = release(version), release(minimum)
    width = max(len(got), len(want))
    return bool(got) and got + (0,) * (width - len(got)) >= want + (0,) * (width - len(want))


def same_build(got: str, expected: str) -> bool:
    """vLLM may append its CUDA variant to the local version (`...d20260603.cu132`)."""
    return got == expected or (got.startswith(expected) and got[len(expected)] in ".+")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _import_failed(module: str, r: Result) -> str:
    tail = _last_line(r.stderr) or r.why()
    if "libtorch_cuda.so" in r.stderr:
        return (
            f"`import {module}` fails in the image ({tail}): torch regressed to a CPU build; "
            "the rebuild silently regressed; do not distribute"
        )
    return f"`import {module}` fails in the image ({tail}); do not distribute"


def judge_torch(spec: ImageSpec, r: Result) -> Judgement:
    e = spec.expect
    want = f"{e.torch} {e.cuda}"
    if not r.ok:
        return Judgement("torch", want, "", False, _import_failed("torch", r))
    got = _last_line(r.stdout)
    parts = got.split()
    version, cuda = (parts + ["", ""])[:2]
    if version == e.torch and cuda == e.cuda:
        return Judgement("torch", want, f"{version}, CUDA {cuda}", True)
    if "+cpu" in version or cuda in ("None", ""):
        meaning = (
            f"torch {version} (CUDA {cuda or 'None'}): the rebuild silently regressed; do not distribute. "
            f"The vLLM wheel's metadata pins an older torch and the resolver picked a CPU build: "
            f"force-reinstall torch=={e.torch} (--no-deps --force-reinstall) in a RUN layer after the "
            f"vLLM install, rebuild, verify again"
        )
    else:
        meaning = (
            f"torch {version} (CUDA {cuda}), expected {e.torch} (CUDA {e.cuda}): the image does not carry "
            "the pinned torch (vLLM's ABI needs it); do not distribute. Rebuild, then verify again"
        )
    return Judgement("torch", want, got, False, meaning)


def judge_vllm(spec: ImageSpec, r: Result) -> Judgement:
    want = spec.expect.vllm or ""
    if not r.ok:
        return Judgement("vllm", want, "", False, _import_failed("vllm", r))
    got = _last_line(r.stdout)
    if same_build(got, want):
        return Judgement("vllm", want, got, True)
    return Judgement(
        "vllm", want, got, False,
        f"vllm {got}, expected {want}: the image was not built from the pinned wheel in wheels/; "
        "do not distribute. Check `wheels:` against the launcher's wheels/ and rebuild",
    )


def judge_transformers(spec: ImageSpec, r: Result) -> Judgement:
    want = spec.expect.transformers_min or ""
    if not r.ok:
        return Judgement("transformers", f">= {want}", "", False, _import_failed("transformers", r))
    got = _last_line(r.stdout)
    if at_least(got, want):
        return Judgement("transformers", f">= {want}", got, True)
    return Judgement(
        "transformers", f">= {want}", got, False,
        f"transformers {got} < {want}: the qwen3_next_mtp config classes live in transformers {want}+; "
        f"the {spec.name} overlay did not override its base's pin; do not distribute",
    )


def probes(spec: ImageSpec) -> list[tuple[str, str]]:
    """(what, python code) for every pinned check the config names for this image."""
    out = [("torch", TORCH_CODE)]
    if spec.expect.vllm:
        out.append(("vllm", VLLM_CODE))
    if spec.expect.transformers_min:
        out.append(("transformers", TRANSFORMERS_CODE))
    return out


JUDGES = {"torch": judge_torch, "vllm": judge_vllm, "transformers": judge_transformers}


def verify_on(cluster: Cluster, spec: ImageSpec, node: Node, image_id: str) -> Verdict:
    """Run the pinned checks for `spec` in image `image_id` on `node` (one container per check)."""
    verdict = Verdict(spec.name, spec.tag, node.name, image_id)
    for what, code in probes(spec):
        r = cluster.run(node, probe_command(cluster.settings.docker, image_id, code), timeout=PROBE_TIMEOUT_S)
        if r.exit_code is None:
            verdict.error = f"cannot run the {what} check: {r.why()}"
            return verdict
        if r.exit_code in (125, 126, 127) and not r.stdout.strip():
            verdict.error = (
                f"the container engine could not run the {what} check (exit {r.exit_code}: "
                f"{_last_line(r.stderr)}); `inv doctor` checks the engine"
            )
            return verdict
        verdict.checks.append(JUDGES[what](spec, r))
    verdict.verified_at = utc_stamp()
    return verdict


def record_path(image_id: str) -> str:
    return f"{RECORD_DIR}/{normalize_id(image_id)}.json"


def record_command(verdicts: list[Verdict]) -> str:
    """Write (atomically) the head's record for one image ID from all verdicts about it."""
    first = verdicts[0]
    data = {
        "id": first.id,
        "image": first.image,
        "tag": first.tag,
        "ok": all(v.ok for v in verdicts),
        "verified_at": max(v.verified_at for v in verdicts),
        "nodes": {v.node: {"ok": v.ok, "checks": [asdict(c) for c in v.checks]} for v in verdicts},
    }
    path = remote_path(record_path(first.id))
    return (
        f"mkdir -p {remote_path(RECORD_DIR)} && printf '%s\\n' {q(json.dumps(data, sort_keys=True))} "
        f"> {path}.partial && mv {path}.partial {path}"
    )


def read_record(cluster: Cluster, image_id: str) -> dict[str, object] | None:
    """The head's verification record for `image_id`, or None when there is none."""
    path = remote_path(record_path(image_id))
    r = cluster.run(cluster.head, f"cat {path} 2>/dev/null || true", timeout=60)
    if not r.ok:
        raise ImagesError(f"cannot read the verification record on {cluster.head.name}: {r.why()}")
    try:
        data = json.loads(r.stdout) if r.stdout.strip() else None
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and data.get("id") == normalize_id(image_id) else None


def save_records(cluster: Cluster, verdicts: Iterable[Verdict]) -> None:
    """Record every completed verdict on the head, one file per image ID."""
    by_id: dict[str, list[Verdict]] = {}
    for v in verdicts:
        if v.id and not v.error:
            by_id.setdefault(v.id, []).append(v)
    for group in by_id.values():
        r = cluster.run(cluster.head, record_command(group), mutating=True, timeout=60)
        if not r.ok:
            raise ImagesError(
                f"could not record the verification of {group[0].tag} on {cluster.head.name}: {r.why()}"
            )


def verify(cluster: Cluster, specs: list[ImageSpec], nodes: Iterable[Node]) -> list[Verdict]:
    """Verify each image on each node (nodes in parallel) and record the results by image ID."""
    nodes = list(nodes)
    states, failed = image_states(cluster, nodes, [s.tag for s in specs])
    verdicts: list[Verdict] = []
    for spec in specs:
        def one(node: Node, spec: ImageSpec = spec) -> Verdict:
            if node.name in failed:
                return Verdict(spec.name, spec.tag, node.name, "", error=failed[node.name].why())
            present = states[node.name].get(spec.tag)
            if present is None:
                return Verdict(
                    spec.name, spec.tag, node.name, "",
                    error=f"{node.name} has no {spec.tag} (`inv distribute --image {spec.name}` "
                    f"or `inv restore --image {spec.name} --node {node.name}`)",
                )
            return verify_on(cluster, spec, node, present.id)

        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            verdicts += list(pool.map(one, nodes))
    save_records(cluster, verdicts)
    return verdicts


def ensure_verified(cluster: Cluster, spec: ImageSpec, present: Present) -> None:
    """Refuse an image whose ID failed verification; verify it on the head first if never checked."""
    record = read_record(cluster, present.id)
    if record is None:
        cluster.say(f"{spec.tag} (ID {short(present.id)}) was never verified: verifying on {cluster.head.name} first")
        verdict = verify_on(cluster, spec, cluster.head, present.id)
        cluster.say(verdict.report())
        save_records(cluster, [verdict])
        if not verdict.ok:
            raise ImagesError(
                f"refusing to distribute {spec.tag} (ID {short(present.id)}): {verdict.failures()}"
            )
        return
    if not record.get("ok"):
        nodes = record.get("nodes")
        reasons = []
        if isinstance(nodes, dict):
            for entry in nodes.values():
                for c in entry.get("checks", []) if isinstance(entry, dict) else []:
                    if isinstance(c, dict) and not c.get("ok"):
                        reasons.append(str(c.get("meaning")))
        raise ImagesError(
            f"refusing to distribute {spec.tag} (ID {short(present.id)}): it failed verification at "
            f"{record.get('verified_at')}: {'; '.join(dict.fromkeys(reasons)) or 'see inv verify'}. "
            f"Rebuild it (`inv rebuild --image {spec.name}`)"
        )
    cluster.say(f"{spec.tag} (ID {short(present.id)}) verified at {record.get('verified_at')}")
