"""The two copies of staging, overlapped: hop 1 (control -> head over the one 1 GbE uplink) runs
while hop 2 forwards every file that is complete on the head to the workers over the fabric.

A file counts as complete on the head when its size AND mtime equal the source's: rsync sets the
mtime last, after the data and the --append-verify check, so a file still being written is never
forwarded. A last pass per worker then rsyncs the whole folder. rsync options were chosen by
measurement (benchmarks/staging.py, docs/staging.md): --append-verify resumes a cut shard by
appending its tail instead of the delta pass over the part already there.
"""

from __future__ import annotations

import shlex
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from .config import ModelSpec, Node
from .listing import model_dir, source_dir
from .progress import PLAIN_EVERY_S, TransferBar, human
from .remote import FABRIC_SSH, Cluster, Result
from .shell import q

# -L: a Hugging Face cache is symlinks into blobs/; copy the real files, never the links.
BASE = ["rsync", "-a", "--copy-links", "--partial", "--info=progress2", "--no-inc-recursive"]
RSYNC = [*BASE, "--append-verify"]
# re-copying what verify found wrong: same size is no proof there, so no append, no quick check
REPAIR = [*BASE, "--ignore-times", "--whole-file"]
POLL_S = 0.5
# Fabric hop: AES-GCM first (hardware AES on the head), then OpenSSH's own default. Both are in
# OpenSSH's default set, so nothing is weakened; measured 51 vs 41 MB/s per stream (docs/staging.md).
FABRIC_CIPHERS = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-gcm@openssh.com"

Stamped = dict[str, tuple[int, int]]  # relative path -> (size, whole-second mtime)


def stamped_command(path: str) -> str:
    return f"cd {q(path)} 2>/dev/null || exit 0; find -L . -type f -printf '%P\\t%s\\t%T@\\n'"


def parse_stamped(stdout: str) -> Stamped:
    out: Stamped = {}
    for line in stdout.splitlines():
        parts = line.rsplit("\t", 2)
        if len(parts) == 3:
            out[parts[0]] = (int(parts[1]), int(float(parts[2])))
    return out


def hop1_argv(cluster: Cluster, spec: ModelSpec, opts: list[str] | None = None, files_from: str | None = None) -> list[str]:
    src, dst = source_dir(cluster, spec), model_dir(cluster.settings.model_root, spec)
    ssh = shlex.join(["ssh", *cluster.ssh_options()])
    extra = [f"--files-from={files_from}"] if files_from else []
    return [*(opts or RSYNC), *extra, "-e", ssh, f"{src}/", f"{cluster.head.mgmt}:{dst}/"]


def hop2_command(cluster: Cluster, worker: Node, path: str, files: list[str] | None = None,
                 opts: list[str] | None = None) -> str:
    """The line the head runs for one worker: make the folder, then rsync over the fabric."""
    rsync = [*(opts or RSYNC), "-e", f"{FABRIC_SSH} -c {FABRIC_CIPHERS}"]
    feed = ""
    if files is not None:
        rsync += ["--files-from=-"]
        feed = "printf '%s\\n' " + " ".join(q(f) for f in files) + " | "
    target = cluster.fabric_rsync_target(worker, f"{path}/")
    return (f"{cluster.fabric_ssh(worker, f'mkdir -p {q(path)}')} && "
            f"{feed}{shlex.join(rsync)} {q(path + '/')} {q(target)}")


def run_hop1(cluster: Cluster, spec: ModelSpec, need: int, bar: TransferBar | None = None) -> Result:
    dst = model_dir(cluster.settings.model_root, spec)
    head = cluster.head
    mk = cluster.run(head, f"mkdir -p {q(dst)}", mutating=True)
    if not mk.ok:
        return mk
    r = cluster.run_local(hop1_argv(cluster, spec), label=f"control->{head.name}", mutating=True, sink=bar)
    return Result(head.name, r.command, r.exit_code, r.stdout, r.stderr, r.seconds, r.error, r.dry_run)


IN_FLIGHT = 2  # forwards per worker at once: a small shard need not wait behind a big one


@dataclass
class WorkerState:
    node: Node
    bar: TransferBar | None
    sent: set[str] = field(default_factory=set)
    running: list[tuple[Future[Result], list[str] | None]] = field(default_factory=list)
    failed: Result | None = None

    def in_flight(self) -> set[str]:
        return {f for _, files in self.running for f in files or []}


class Overlap:
    """Drive hop 1 and the forwarding of complete files; say progress and the whole job's ETA."""

    def __init__(self, cluster: Cluster, spec: ModelSpec, source: dict[str, tuple[int, int]],
                 needs: dict[str, int], workers: list[Node], forward: bool = True):
        """`forward=False`: the hops one after the other (--hop, and the benchmark's baseline)."""
        self.cl, self.spec, self.source = cluster, spec, source
        self.path = model_dir(cluster.settings.model_root, spec)
        self.need_head = needs.get(cluster.head.name, 0)
        quiet = cluster.dry_run
        self.bar1 = None if quiet or not self.need_head else TransferBar(f"{cluster.head.name} (hop 1, mgmt)",
                                                                         self.need_head)
        self.workers = {w.name: WorkerState(w, None if quiet else TransferBar(f"{w.name} (hop 2, fabric)",
                                                                            needs.get(w.name, 0), position=i + 1))
                        for i, w in enumerate(workers)}
        self.forward = forward and bool(source)
        self.last_say = time.monotonic()

    def _forward(self, st: WorkerState, files: list[str] | None) -> Result:
        sink = st.bar.part() if st.bar else None
        r = self.cl.run(self.cl.head, hop2_command(self.cl, st.node, self.path, files), mutating=True, sink=sink)
        return Result(st.node.name, r.command, r.exit_code, r.stdout, r.stderr, r.seconds, r.error, r.dry_run)

    def complete_on_head(self) -> set[str]:
        r = self.cl.run(self.cl.head, stamped_command(self.path))
        have = parse_stamped(r.stdout) if r.ok else {}
        return {rel for rel, stamp in self.source.items() if have.get(rel) == stamp}

    @staticmethod
    def _collect(st: WorkerState) -> None:
        for item in [x for x in st.running if x[0].done()]:
            st.running.remove(item)
            r = item[0].result()
            if r.ok:
                st.sent.update(item[1] or [])
            elif st.failed is None:
                st.failed = r

    def run(self, hop1: bool) -> tuple[Result | None, dict[str, Result]]:
        """Returns hop 1's result (None when skipped) and each worker's outcome."""
        cl = self.cl
        pool = ThreadPoolExecutor(max_workers=1 + IN_FLIGHT * max(len(self.workers), 1))
        try:
            return self._run(pool, hop1)
        except KeyboardInterrupt:
            # Ctrl-C: cluster/interrupt.py has already stopped every copy this stage started (hop 1's
            # local rsync and the forwards on the head); --partial/--append-verify leave each cut
            # shard resumable. Only the forwards not yet started are left to cancel.
            cl.say("interrupted: stopping the copies; a rerun continues every cut file from where it stopped")
            pool.shutdown(wait=False, cancel_futures=True)
            raise

    def _run(self, pool: ThreadPoolExecutor, hop1: bool) -> tuple[Result | None, dict[str, Result]]:
        cl = self.cl
        with pool:
            h1: Future[Result] | None = pool.submit(run_hop1, cl, self.spec, self.need_head, self.bar1) if hop1 else None
            while self.forward and not cl.dry_run:
                done1 = h1 is None or h1.done()
                complete = self.complete_on_head()
                busy = False
                for st in self.workers.values():
                    self._collect(st)
                    todo = sorted(complete - st.sent - st.in_flight())
                    if todo and not st.failed and len(st.running) < IN_FLIGHT:
                        st.running.append((pool.submit(self._forward, st, todo), todo))
                    busy = busy or bool(st.running)
                self._say_eta()
                if done1 and not busy:
                    break
                time.sleep(POLL_S)
            r1 = h1.result() if h1 is not None else None
            if self.bar1:
                self.bar1.close(r1 is None or r1.ok)
            # a last pass of the whole folder where forwarding did not cover every file
            # (hop 2 alone, the sequential baseline, or a file the polls missed)
            last: dict[str, Future[Result]] = {}
            if r1 is None or r1.ok:
                for name, st in self.workers.items():
                    if st.failed is None and not (self.forward and st.sent >= set(self.source)):
                        last[name] = pool.submit(self._forward, st, None)
            results = {name: f.result() for name, f in last.items()}
        for name, st in self.workers.items():
            if name not in results:
                results[name] = st.failed or Result(name, "forwarded file by file", 0)
            if st.bar:
                st.bar.close(results[name].ok)
        return r1, results

    def _say_eta(self) -> None:
        now = time.monotonic()
        if now - self.last_say < PLAIN_EVERY_S:
            return
        self.last_say = now
        bars: list[tuple[str, TransferBar | None]] = [("hop 1", self.bar1)]
        bars += [(n, st.bar) for n, st in self.workers.items()]
        parts, lefts = [], []
        for label, bar in bars:
            if bar is None:
                continue
            parts.append(f"{label} {human(bar.done)}/{human(bar.total)} {human(bar.rate())}/s")
            if bar.total > bar.done:
                lefts.append(bar.seconds_left())
        eta = max(lefts, default=0.0)
        when = "unknown" if eta == float("inf") else f"{eta:.0f} s"
        self.cl.say(f"stage: {'; '.join(parts)}; whole job ETA {when}")


