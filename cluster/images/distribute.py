"""Moving images head -> workers over the fabric, as one stream: no tar is written on a node.

distribute reads the image once on the head and fans it out to every worker that lacks it:

    { ssh w1 docker load < fifo1; echo "@exit w1 $?"; } &   (one per worker, each on its own FIFO)
    docker save IMG | dd status=progress | tee -p fifo1 fifo2 fifo3 > /dev/null
    wait

`tee -p` keeps feeding the other workers when one of them dies. FIFOs, not `>(...)` process
substitutions: bash lets each substitution inherit the pipes of those made before it, so a
worker's load saw end-of-file only once the later workers' loads had exited, and the loads'
final steps ran one after another. `tee` hands every live worker the same bytes in lockstep, so
one `dd` before it counts what each has received; a worker's bar stops when its exit status
arrives. No image data touches the head's disk (the FIFOs and small logs live in a temp dir).
Afterwards every node's image ID is compared with the head's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import ImageSpec, Node
from ..progress import TransferBar, human
from ..remote import Cluster, Result
from ..shell import LineSplitter, q
from . import space
from .select import Present, head_image, image_states, short
from .verify import ensure_verified

_PROGRESS = re.compile(r"^@progress (\d+) bytes")
_EXIT = re.compile(r"^@exit (\S+) (\d+)")
_TAG = re.compile(r"(?=@(?:progress|exit|out) )")


def stream_script(cluster: Cluster, tag: str, targets: list[Node]) -> str:
    """The bash script the head runs: a background load per target reading its own FIFO (it
    reports its exit status as soon as it ends), one `docker save` counted once and fanned out
    by `tee`, then `wait` for every load."""
    d = q(cluster.settings.docker)
    lines = [
        't=$(mktemp -d "${TMPDIR:-/tmp}/gx10-distribute.XXXXXX") || exit 1',
        "trap 'rm -rf \"$t\"' EXIT",
        "mkfifo " + " ".join(f'"$t/{i}.fifo"' for i in range(len(targets))),
        "exec 3>&1",
    ]
    for i, w in enumerate(targets):
        load = cluster.fabric_ssh(w, f"{d} load")
        lines.append(f'{{ {load} < "$t/{i}.fifo" > "$t/{i}.log" 2>&1; echo "@exit {w.name} $?"; '
                     f'tail -n 3 "$t/{i}.log" | sed {q(f"s/^/@out {w.name} /")}; }} &')
    fifos = " ".join(f'"$t/{i}.fifo"' for i in range(len(targets)))
    lines += [
        f'{d} save {q(tag)} 2> "$t/save.log" \\',
        # The counter's lines must not join dd's stdout (the image): fd 3 is the session's. If
        # stdbuf or tr cannot run, cat drains dd's progress so the stream itself goes on.
        "  | dd bs=1M status=progress 2> >({ stdbuf -o0 tr '\\r' '\\n' 2>/dev/null || cat > /dev/null; } "
        "| sed -u 's/^/@progress /' >&3) \\",
        f"  | tee -p {fifos} > /dev/null",
        'echo "@exit save ${PIPESTATUS[0]}"',
        """tail -n 3 "$t/save.log" | sed 's/^/@out save /'""",
    ]
    return "\n".join([*lines, "wait"]) + "\n"


def stream_command(cluster: Cluster, tag: str, targets: list[Node]) -> str:
    return f"bash -c {q(stream_script(cluster, tag, targets))}"


@dataclass
class StreamOutcome:
    exits: dict[str, int | None]  # worker (and "save") -> exit status; None: none reported
    output: dict[str, list[str]]  # worker (and "save") -> last lines of its output


def tagged_lines(text: str) -> list[str]:
    """The stream's tagged lines. A load killed mid-way leaves its last progress line without a
    newline, so the next tag can follow on the same line: split before every tag."""
    return [part.rstrip() for line in text.splitlines() for part in _TAG.split(line) if part.strip()]


def parse_stream(stdout: str, names: Iterable[str]) -> StreamOutcome:
    exits: dict[str, int | None] = {n: None for n in [*names, "save"]}
    output: dict[str, list[str]] = {n: [] for n in exits}
    for line in tagged_lines(stdout):
        parts = line.split(" ", 2)
        if len(parts) >= 3 and parts[0] == "@exit" and parts[1] in exits and parts[2].strip().isdigit():
            exits[parts[1]] = int(parts[2])
        elif len(parts) >= 2 and parts[0] == "@out" and parts[1] in output:
            output[parts[1]].append(parts[2] if len(parts) == 3 else "")
    return StreamOutcome(exits, output)


class StreamProgress:
    """A sink for the head's stream output: the bytes `tee` has fed so far drive one TransferBar
    per worker until that worker's exit status arrives."""

    def __init__(self, names: list[str], total: int, label: str):
        self.bars = {n: TransferBar(f"{label} -> {n}", total, position=i) for i, n in enumerate(names)}
        self.ended: set[str] = set()
        self._lines = LineSplitter(self._line)

    def write(self, data: str) -> int:
        return self._lines.write(data)

    def flush(self) -> None:
        pass

    def _line(self, text: str) -> None:
        for line in tagged_lines(text):
            if m := _PROGRESS.match(line):
                for name, bar in self.bars.items():
                    if name not in self.ended:
                        bar.update(int(m.group(1)))
            elif (m := _EXIT.match(line)) and m.group(1) in self.bars:
                self.ended.add(m.group(1))

    def close(self, outcome: StreamOutcome) -> None:
        for name, bar in self.bars.items():
            bar.close(outcome.exits.get(name) == 0)


@dataclass
class Failure:
    node: str
    image: str
    why: str


def _distribute_one(cluster: Cluster, spec: ImageSpec) -> list[Failure]:
    head = cluster.head
    source = head_image(cluster, spec)
    ensure_verified(cluster, spec, source)
    states, unreachable = image_states(cluster, cluster.workers, [spec.tag])
    failures = [
        Failure(name, spec.tag, f"{r.why()} (not sent)") for name, r in unreachable.items()
    ]
    current = [w for w in cluster.workers if w.name in states and _holds(states[w.name], spec, source)]
    targets = [w for w in cluster.workers if w.name in states and w not in current]
    if current:
        cluster.say(f"{spec.tag}: up to date on {', '.join(w.name for w in current)} (ID {short(source.id)}), skipped")
    if not targets:
        if not failures:
            cluster.say(f"{spec.tag}: every worker is up to date")
        return failures
    head_short = space.check(cluster, [head], source.size, what=f"docker save {spec.tag}", store=False)
    if head_short:
        return failures + [Failure(w.name, spec.tag, f"not sent: {head.name}: {head_short[head.name]}")
                           for w in targets]
    short_of = space.check(cluster, targets, source.size, what=spec.tag)
    failures += [Failure(name, spec.tag, f"not sent: {why}") for name, why in short_of.items()]
    targets = [w for w in targets if w.name not in short_of]
    if not targets:
        return failures
    cluster.say(
        f"{spec.tag}: streaming {human(source.size)} from {head.name} to {', '.join(w.name for w in targets)} "
        "over the fabric, " + ("one save, loads in parallel" if len(targets) > 1 else "one save, one load")
    )
    bars = None if cluster.dry_run else StreamProgress([w.name for w in targets], source.size, spec.name)
    r = cluster.run(head, stream_command(cluster, spec.tag, targets), mutating=True, sink=bars)
    if cluster.dry_run:
        return failures
    outcome = parse_stream(r.stdout, [w.name for w in targets])
    if bars:
        bars.close(outcome)
    for name, rc in outcome.exits.items():
        cluster.ops_log.event(f"distribute {spec.tag} -> {name}: exit {rc if rc is not None else 'none'}")
    if outcome.exits["save"] is None:
        failures += [Failure(w.name, spec.tag, f"the stream on {head.name} ended without reporting: {r.why()}")
                     for w in targets]
        return failures
    save_failed = outcome.exits["save"] != 0
    after, after_failed = image_states(cluster, [head, *targets], [spec.tag])
    for w in targets:
        got = after.get(w.name, {}).get(spec.tag)
        if got is not None and got.id == source.id and outcome.exits[w.name] == 0:
            continue
        why = _why(outcome, w.name, save_failed, got, source, after_failed.get(w.name))
        load = cluster.fabric_ssh(w, f"{q(cluster.settings.docker)} load")
        failures.append(Failure(w.name, spec.tag, f"{why} ({head.name} ran: docker save {spec.tag} | ... | {load})"))
    head_now = after.get(head.name, {}).get(spec.tag)
    if head_now is not None and head_now.id != source.id:
        failures.append(Failure(head.name, spec.tag, f"{spec.tag} changed on {head.name} during the copy "
                                f"(now {short(head_now.id)}): run distribute again"))
    done = [w.name for w in targets if w.name not in {f.node for f in failures}]
    if done:
        cluster.say(f"{spec.tag}: {', '.join(done)} now {'hold' if len(done) > 1 else 'holds'} ID {short(source.id)}")
    return failures


def _holds(state: dict[str, Present | None], spec: ImageSpec, source: Present) -> bool:
    got = state.get(spec.tag)
    return got is not None and got.id == source.id


def _why(outcome: StreamOutcome, name: str, save_failed: bool, got: Present | None, source: Present,
         unreachable: Result | None) -> str:
    if save_failed:
        return f"docker save failed on the head: {' | '.join(outcome.output['save']) or 'no output'}"
    rc = outcome.exits.get(name)
    tail = " | ".join(outcome.output.get(name, []))
    if rc not in (0, None):
        return f"docker load over the fabric exited {rc}" + (f": {tail}" if tail else "")
    if rc is None:
        return "no exit status came back from its load"
    if unreachable is not None:
        return f"loaded, but its image ID could not be checked: {unreachable.why()}"
    if got is None:
        return "the load reported success but the image is not there"
    return f"holds ID {short(got.id)} after the load, expected {short(source.id)}"


def distribute(cluster: Cluster, specs: list[ImageSpec]) -> list[Failure]:
    """Stream each image from the head to the workers that lack it; return what failed, per node.
    One image's failing worker does not stop the others or the next image."""
    failures: list[Failure] = []
    for spec in specs:
        failures += _distribute_one(cluster, spec)
    return failures


def describe_failures(failures: list[Failure]) -> str:
    nodes = sorted({f.node for f in failures})
    lines = [f"distribute failed on {', '.join(nodes)}:"]
    lines += [f"  {f.node}: {f.image}: {f.why}" for f in failures]
    lines.append("fix the node (`inv doctor`), then run `inv distribute` again: workers that already hold "
                 "the image are skipped, so only what is missing is sent")
    return "\n".join(lines)
