"""Container images: which to act on and in what order, their IDs per node, verification against
the pinned versions (recorded by image ID), and rebuilding on the head through the launcher.

The seed's rule is that nothing leaves the head unverified: `rebuild` never runs the launcher's
copy step, `verify` writes a record per image ID on the head, and `distribute` (imagecopy.py)
reads that record before a byte moves. Verification runs the probes against the image ID, not
the tag, so a record always speaks about exactly the bytes that were checked.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from .config import ImageSpec, Node, Settings
from .facts import normalize_id
from .remote import Cluster, Result, q, remote_path

RECORD_DIR = "~/.gx10-ops/verified"
TORCH_CODE = "import torch; print(torch.__version__, torch.version.cuda)"
VLLM_CODE = "import vllm; print(vllm.__version__)"
TRANSFORMERS_CODE = "import transformers; print(transformers.__version__)"
COPY_FLAGS = ("-c", "--copy-to", "--copy-parallel")
PROBE_TIMEOUT_S = 900.0


class ImagesError(Exception):
    """An image task cannot go on; the message names the node, the image and what to do."""


# -- which images, in which order -----------------------------------------------------------
def lineage_order(settings: Settings, names: Iterable[str]) -> list[ImageSpec]:
    """`names` sorted so that a base comes before the images built on it (config order else)."""
    wanted = list(dict.fromkeys(names))
    position = list(settings.images)
    return [settings.image(n) for n in
            sorted(wanted, key=lambda n: (len(_ancestors(settings, settings.image(n))), position.index(n)))]


def select(settings: Settings, name: str | None) -> list[ImageSpec]:
    """`--image NAME` -> that image; none -> every live image, in lineage order."""
    if name:
        return [settings.image(name)]
    live = [n for n, spec in settings.images.items() if spec.live]
    if not live:
        raise ImagesError("no image is marked `live: true` under `images:`; name one with --image")
    return lineage_order(settings, live)


def protected_tags(settings: Settings) -> dict[str, str]:
    """Tags that must never be pruned: every live image and, recursively, its bases."""
    out: dict[str, str] = {}
    for spec in settings.images.values():
        if not spec.live:
            continue
        out[spec.tag] = "live"
        child = spec
        while child.base:
            base = settings.image(child.base)
            out.setdefault(base.tag, f"base of {child.name}")
            child = base
    return out


# -- what each node holds --------------------------------------------------------------------
@dataclass(frozen=True)
class Present:
    id: str  # normalized hex
    size: int  # bytes, as the engine reports the image


def inspect_command(docker: str, tags: Iterable[str]) -> str:
    d = q(docker)
    lines = []
    for tag in tags:
        lines.append(
            f"printf '%s\\t%s\\n' {q(tag)} \"$({d} image inspect --format '{{{{.Id}}}} {{{{.Size}}}}' "
            f"{q(tag)} 2>/dev/null || echo -)\""
        )
    return "\n".join(lines)


def parse_inspect(stdout: str) -> dict[str, Present | None]:
    out: dict[str, Present | None] = {}
    for line in stdout.splitlines():
        tag, _, rest = line.partition("\t")
        parts = rest.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[tag] = Present(normalize_id(parts[0]), int(parts[1]))
        elif tag:
            out[tag] = None
    return out


def image_states(
    cluster: Cluster, nodes: Iterable[Node], tags: Iterable[str]
) -> tuple[dict[str, dict[str, Present | None]], dict[str, Result]]:
    """Per reachable node, tag -> what it holds (None: absent); and the nodes that did not answer."""
    tags = list(tags)
    results = cluster.run_all(inspect_command(cluster.settings.docker, tags), list(nodes), timeout=120)
    states = {name: parse_inspect(r.stdout) for name, r in results.items() if r.ok}
    failed = {name: r for name, r in results.items() if not r.ok}
    return states, failed


def head_image(cluster: Cluster, spec: ImageSpec) -> Present:
    """The image as the head holds it, or an error saying how to get it there."""
    states, failed = image_states(cluster, [cluster.head], [spec.tag])
    head = cluster.head.name
    if head in failed:
        raise ImagesError(f"cannot inspect {spec.tag} on {head}: {failed[head].why()}")
    present = states[head].get(spec.tag)
    if present is None:
        raise ImagesError(
            f"{head} has no {spec.tag}: build it (`inv rebuild --image {spec.name}`) or restore it "
            f"from the control's backup (`inv restore --image {spec.name} --node {head}`)"
        )
    return present


def short(image_id: str) -> str:
    return normalize_id(image_id)[:12]


# -- verification ------------------------------------------------------------------------------
@dataclass
class Check:
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
    checks: list[Check] = field(default_factory=list)
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


def judge_torch(spec: ImageSpec, r: Result) -> Check:
    e = spec.expect
    want = f"{e.torch} {e.cuda}"
    if not r.ok:
        return Check("torch", want, "", False, _import_failed("torch", r))
    got = _last_line(r.stdout)
    parts = got.split()
    version, cuda = (parts + ["", ""])[:2]
    if version == e.torch and cuda == e.cuda:
        return Check("torch", want, f"{version}, CUDA {cuda}", True)
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
    return Check("torch", want, got, False, meaning)


def judge_vllm(spec: ImageSpec, r: Result) -> Check:
    want = spec.expect.vllm or ""
    if not r.ok:
        return Check("vllm", want, "", False, _import_failed("vllm", r))
    got = _last_line(r.stdout)
    if same_build(got, want):
        return Check("vllm", want, got, True)
    return Check(
        "vllm", want, got, False,
        f"vllm {got}, expected {want}: the image was not built from the pinned wheel in wheels/; "
        "do not distribute. Check `wheels:` against the launcher's wheels/ and rebuild",
    )


def judge_transformers(spec: ImageSpec, r: Result) -> Check:
    want = spec.expect.transformers_min or ""
    if not r.ok:
        return Check("transformers", f">= {want}", "", False, _import_failed("transformers", r))
    got = _last_line(r.stdout)
    if at_least(got, want):
        return Check("transformers", f">= {want}", got, True)
    return Check(
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
    verdict.verified_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
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


# -- rebuilding on the head -------------------------------------------------------------------
def wheel_problems(pinned: Iterable[str], found: dict[str, int]) -> list[str]:
    """Missing, empty or stale pinned wheels, given wheels/ as file name -> size."""

    def dist(filename: str) -> str:
        return filename.split("-", 1)[0].lower().replace("-", "_")

    problems = []
    for wheel in pinned:
        others = sorted(f for f in found if dist(f) == dist(wheel) and f != wheel)
        if wheel not in found:
            if others:
                problems.append(f"stale: wheels/ has {', '.join(others)} but the config pins {wheel}")
            else:
                problems.append(f"missing: {wheel}")
        elif found[wheel] == 0:
            problems.append(f"empty: {wheel} is 0 bytes (an interrupted download?)")
        elif others:
            problems.append(
                f"stale: wheels/ also holds {', '.join(others)} beside the pinned {wheel}; "
                "the build may install either: move the old one out"
            )
    return problems


def check_wheels(cluster: Cluster) -> None:
    s, head = cluster.settings, cluster.head
    repo = remote_path(s.launcher_repo)
    cmd = (
        f"cd {repo} 2>/dev/null || {{ echo NOREPO; exit 0; }}; "
        "[ -d wheels ] || { echo NOWHEELS; exit 0; }; find wheels -maxdepth 1 -name '*.whl' -printf '%f\\t%s\\n'"
    )
    r = cluster.run(head, cmd, timeout=60)
    if not r.ok:
        raise ImagesError(f"cannot list the launcher's wheels on {head.name}: {r.why()}")
    if r.stdout.strip() == "NOREPO":
        raise ImagesError(
            f"{head.name} has no launcher repo at {s.launcher_repo}: "
            f"git clone https://github.com/eugr/spark-vllm-docker there (or set cluster.launcher_repo)"
        )
    if not s.wheels:
        return
    found = {}
    if r.stdout.strip() != "NOWHEELS":
        for line in r.stdout.splitlines():
            name, _, size = line.rpartition("\t")
            if name:
                found[name] = int(size)
    problems = wheel_problems(s.wheels, found)
    if problems:
        raise ImagesError(
            f"the pinned wheels are not in {s.launcher_repo}/wheels on {head.name}; nothing was built:\n"
            + "\n".join(f"  {p}" for p in problems)
            + "\ndrop the pinned wheels there (the config's `wheels:` list), or update `wheels:` "
            "when bumping vLLM"
        )


def check_build_command(spec: ImageSpec) -> None:
    """The launcher's copy step ships before anything is verified: never let a build run it."""
    try:
        words = shlex.split(spec.build)
    except ValueError as e:
        raise ImagesError(f"images.{spec.name}.build = {spec.build!r} is not a valid command: {e}") from e
    copying = [w for w in words if w in COPY_FLAGS or w.startswith("--copy-to=")]
    if copying:
        raise ImagesError(
            f"images.{spec.name}.build = {spec.build!r} asks the launcher to copy ({' '.join(copying)}) "
            "before the image is verified: drop that flag; `inv distribute` copies verified images"
        )


@dataclass
class BuildPlan:
    order: list[ImageSpec]
    notes: list[str]


def plan_rebuild(cluster: Cluster, specs: list[ImageSpec]) -> BuildPlan:
    """Order the builds and make sure every base is there (built earlier in this run, or on the
    head) before anything is built."""
    s = cluster.settings
    order = lineage_order(s, [spec.name for spec in specs])
    for spec in order:
        check_build_command(spec)
    bases = sorted({spec.base for spec in order if spec.base and spec.base not in {o.name for o in order}})
    states, failed = image_states(cluster, [cluster.head], [s.image(b).tag for b in bases])
    if cluster.head.name in failed:
        raise ImagesError(f"cannot inspect images on {cluster.head.name}: {failed[cluster.head.name].why()}")
    on_head = states.get(cluster.head.name, {})
    built: set[str] = set()
    notes: list[str] = []
    for spec in order:
        if spec.base and spec.base not in built:
            base = s.image(spec.base)
            present = on_head.get(base.tag)
            if present is None:
                raise ImagesError(
                    f"{spec.name} builds FROM {base.tag}, which is not on {cluster.head.name} "
                    f"({'not live, so ' if not base.live else ''}not rebuilt by this run); nothing was built. "
                    f"Build it first: `inv rebuild --image {base.name}` (or restore it: "
                    f"`inv restore --image {base.name} --node {cluster.head.name}`)"
                )
            stale = [o.name for o in order if o.name in _ancestors(s, base)]
            note = f"{spec.name} builds on the {base.tag} present on {cluster.head.name} (ID {short(present.id)})"
            if stale:
                note += (f", which this run does not rebuild although its base {', '.join(stale)} is rebuilt: "
                         f"`inv rebuild --image {base.name}` first to rebase it")
            notes.append(note)
        built.add(spec.name)
    return BuildPlan(order, notes)


def _ancestors(settings: Settings, spec: ImageSpec) -> list[str]:
    out = []
    while spec.base:
        out.append(spec.base)
        spec = settings.image(spec.base)
    return out


class _BuildEcho:
    """Build output to the terminal as `[head] line` and, line by line, into the ops log."""

    def __init__(self, cluster: Cluster, node: str, image: str):
        self.cluster, self.node, self.image, self.buf = cluster, node, image, ""

    def write(self, data: str) -> int:
        self.buf += data
        *lines, self.buf = self.buf.replace("\r", "\n").split("\n")
        for line in lines:
            if line.strip():
                self.cluster.out.write(f"[{self.node}] {line}\n")
                self.cluster.ops_log.event(f"{self.node} build {self.image} | {line}")
        self.cluster.out.flush()
        return len(data)

    def flush(self) -> None:
        self.cluster.out.flush()


def build_command(settings: Settings, spec: ImageSpec) -> str:
    return f"cd {remote_path(settings.launcher_repo)} && {{ {spec.build}; }} 2>&1"


def rebuild(cluster: Cluster, specs: list[ImageSpec]) -> list[Verdict]:
    """Check wheels and bases, then build and verify each image in lineage order; stop at the
    first build or verification failure. Nothing is copied anywhere."""
    head = cluster.head
    check_wheels(cluster)
    plan = plan_rebuild(cluster, specs)
    for note in plan.notes:
        cluster.say(f"note: {note}")
    cluster.say("build order: " + " -> ".join(spec.name for spec in plan.order))
    verdicts: list[Verdict] = []
    for spec in plan.order:
        before = image_states(cluster, [head], [spec.tag])[0].get(head.name, {}).get(spec.tag)
        cluster.say(f"building {spec.tag} on {head.name}: {spec.build}")
        echo = None if cluster.dry_run else _BuildEcho(cluster, head.name, spec.name)
        r = cluster.run(head, build_command(cluster.settings, spec), mutating=True, sink=echo)
        if cluster.dry_run:
            cluster.say(f"[dry-run] {head.name}: then verify {spec.tag}: "
                        + "; ".join(probe_command(cluster.settings.docker, spec.tag, code) for _, code in probes(spec)))
            continue
        if not r.ok:
            raise ImagesError(
                f"building {spec.tag} on {head.name} failed ({r.why()}); nothing was distributed. "
                f"command: {r.command}. The full output is above and in the operations log"
            )
        after = image_states(cluster, [head], [spec.tag])[0].get(head.name, {}).get(spec.tag)
        if after is None:
            raise ImagesError(
                f"the build of {spec.name} finished but {head.name} has no {spec.tag}: does "
                f"images.{spec.name}.build ({spec.build!r}) tag it as {spec.tag}?"
            )
        changed = "unchanged" if before and before.id == after.id else f"was {short(before.id)}" if before else "new"
        cluster.say(f"built {spec.tag}: ID {short(after.id)} ({changed}); verifying")
        verdict = verify_on(cluster, spec, head, after.id)
        cluster.say(verdict.report())
        save_records(cluster, [verdict])
        verdicts.append(verdict)
        if not verdict.ok:
            back = (f". The previous build is still on {head.name} (ID {short(before.id)}, untagged): "
                    f"`docker tag {before.id} {spec.tag}` there to go back to it" if before and before.id != after.id else "")
            raise ImagesError(
                f"{spec.tag} (ID {short(after.id)}) failed verification on {head.name}: {verdict.failures()}. "
                f"Nothing was distributed{back}"
            )
    return verdicts
