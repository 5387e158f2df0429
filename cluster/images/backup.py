"""The control node's copies of images: head -> control (backup) and control -> a node (restore).
Both are streams through ssh (`docker save` / `docker load`), so no tar is written on a node;
a backup is complete only once renamed beside the JSON that records its image ID and size."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .. import interrupt
from ..config import ImageSpec, Node
from ..progress import TransferBar, human
from ..remote import Cluster
from ..shell import q, tail, utc_stamp
from . import space
from .errors import ImagesError
from .select import head_image, held, image_states, short

CHUNK = 1 << 20


@dataclass
class Backup:
    tar: Path
    meta: Path

    def record(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.meta.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def matches(self) -> dict[str, object] | None:
        """The record, when the tar beside it is complete (its size is the recorded one)."""
        rec = self.record()
        if rec is None or not self.tar.is_file() or self.tar.stat().st_size != rec.get("bytes"):
            return None
        return rec


def backup_paths(cluster: Cluster, spec: ImageSpec) -> Backup:
    d = cluster.settings.image_backup_dir
    return Backup(d / f"{spec.name}.tar", d / f"{spec.name}.json")


def _dry(cluster: Cluster, label: str, shown: str) -> None:
    cluster.say(f"[dry-run] {label}: {shown}")
    cluster.ops_log.record(label, shown, 0, 0.0, note="dry-run")


def _pump(src: IO[bytes], dst: IO[bytes], bar: TransferBar) -> int:
    done = 0
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        done += len(chunk)
        bar.update(done)
    return done


def _drain(stream: IO[bytes] | None, into: list[bytes]) -> threading.Thread:
    t = threading.Thread(target=lambda: into.append(stream.read() if stream else b""), daemon=True)
    t.start()
    return t


def backup(cluster: Cluster, specs: list[ImageSpec]) -> list[str]:
    """Save each image from the head into the control's backup folder (skipping an up-to-date
    copy): streamed into `NAME.tar.partial`, renamed when complete, its ID recorded in NAME.json."""
    head = cluster.head
    folder = cluster.settings.image_backup_dir
    done = []
    for spec in specs:
        source = head_image(cluster, spec)
        paths = backup_paths(cluster, spec)
        rec = paths.matches()
        if rec and rec.get("id") == source.id:
            cluster.say(f"{spec.tag}: the backup {paths.tar} already holds ID {short(source.id)}")
            continue
        save = f"{q(cluster.settings.docker)} save {q(spec.tag)}"
        argv = cluster.ssh_argv(head, save)
        partial = paths.tar.with_name(paths.tar.name + ".partial")
        if cluster.dry_run:
            _dry(cluster, "control", f"{shlex.join(argv)} > {q(str(partial))} && mv {q(str(partial))} {q(str(paths.tar))}")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if free < source.size * 1.05:
            raise ImagesError(
                f"not enough room in {folder} on the control for {spec.tag}: {human(source.size)} needed, "
                f"{human(free)} free; nothing was written"
            )
        cluster.say(f"{spec.tag}: saving {human(source.size)} from {head.name} into {paths.tar}")
        start = time.monotonic()
        bar = TransferBar(f"{spec.name} <- {head.name}", source.size)
        err: list[bytes] = []
        token = interrupt.new_token()
        with partial.open("wb") as out:
            proc = subprocess.Popen(cluster.stream_argv(head, save, token), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            try:
                with interrupt.registered(token, _stopper(cluster, head, token, proc)):
                    drain = _drain(proc.stderr, err)
                    assert proc.stdout is not None
                    size = _pump(proc.stdout, out, bar)
                    out.flush()
                    os.fsync(out.fileno())
                    rc = proc.wait()
                    drain.join()
            except KeyboardInterrupt:
                _interrupted(cluster, head, token, proc, "control", f"{shlex.join(argv)} > {partial}", start)
                partial.unlink(missing_ok=True)
                raise
        bar.close(rc == 0)
        stderr = b"".join(err).decode(errors="replace")
        cluster.ops_log.record("control", f"{shlex.join(argv)} > {partial}", rc, time.monotonic() - start,
                               stderr=stderr)
        after = held(cluster, head, spec.tag)
        if rc != 0 or after is None or after.id != source.id:
            partial.unlink(missing_ok=True)
            last = tail(stderr)
            why = (f"ssh/docker save exited {rc}" + (f": {last}" if last else "") if rc != 0
                   else f"{spec.tag} changed on {head.name} while it was saved")
            raise ImagesError(f"backup of {spec.tag} failed ({why}); the previous backup, if any, is untouched. "
                              f"command: {shlex.join(argv)}")
        partial.rename(paths.tar)
        meta = {"image": spec.name, "tag": spec.tag, "id": source.id, "bytes": size, "source": head.name,
                "saved_at": utc_stamp()}
        tmp_meta = paths.meta.with_name(paths.meta.name + ".partial")
        tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tmp_meta.rename(paths.meta)
        cluster.say(f"{spec.tag}: backed up ID {short(source.id)}, {human(size)} in {time.monotonic() - start:.1f} s")
        done.append(spec.name)
    return done


def _stopper(cluster: Cluster, node: Node, token: str, proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    """What Ctrl-C does to a control-side stream: stop the local ssh first (nobody reads its pipe
    any more, and a remote `docker save` blocked writing to it would not end on TERM), then its
    remote command."""
    def stop() -> None:
        try:
            interrupt.kill_local_group(proc)
        finally:
            cluster.stop_remote(node, token)
    return stop


def _interrupted(cluster: Cluster, node: Node, token: str, proc: subprocess.Popen[bytes], label: str,
                 shown: str, start: float) -> None:
    """After Ctrl-C: make sure both ends are gone, then log the stream that ran."""
    interrupt.wait_stopped()
    interrupt.kill_local_group(proc)
    proc.wait()
    cluster.ops_log.record(label, shown, None, time.monotonic() - start,
                           note="interrupted (Ctrl-C): the stream and its remote command were stopped")


def restore(cluster: Cluster, spec: ImageSpec, nodes: Iterable[Node], force: bool = False) -> list[str]:
    """Stream the control's backup of `spec` into `docker load` on each node (no copy on the node),
    then check the node's image ID is the recorded one. Returns the nodes restored."""
    paths = backup_paths(cluster, spec)
    rec = paths.matches()
    if rec is None:
        raise ImagesError(
            f"no complete backup of {spec.name} on the control: expected {paths.tar} and {paths.meta} "
            f"with matching size; take one with `inv backup --image {spec.name}`"
        )
    want = str(rec["id"])
    nodes = list(nodes)
    states, unreachable = image_states(cluster, nodes, [spec.tag])
    if unreachable:
        raise ImagesError("\n".join([f"cannot restore {spec.tag}; unreachable:"]
                                    + [f"  {n}: {r.why()}" for n, r in unreachable.items()]))
    restored = []
    for node in nodes:
        got = states[node.name].get(spec.tag)
        if got is not None and got.id == want:
            cluster.say(f"{node.name}: already holds {spec.tag} as ID {short(want)}; nothing to restore")
            continue
        if got is not None and not force:
            raise ImagesError(
                f"{node.name} holds {spec.tag} as ID {short(got.id)}, the backup is ID {short(want)} "
                f"(saved {rec.get('saved_at')}): restoring would replace a different image. Pass --force "
                "if that is what you want"
            )
        argv = cluster.ssh_argv(node, f"{q(cluster.settings.docker)} load")
        if cluster.dry_run:
            _dry(cluster, f"control->{node.name}", f"{shlex.join(argv)} < {q(str(paths.tar))}")
            continue
        size = paths.tar.stat().st_size
        short_of = space.check(cluster, [node], size, what=f"restoring {spec.tag}")
        if short_of:
            raise ImagesError(f"{node.name}: {short_of[node.name]}; nothing was sent")
        cluster.say(f"{node.name}: loading {paths.tar} ({human(size)}, ID {short(want)})")
        start = time.monotonic()
        bar = TransferBar(f"{spec.name} -> {node.name}", size)
        out: list[bytes] = []
        token = interrupt.new_token()
        proc = subprocess.Popen(cluster.stream_argv(node, f"{q(cluster.settings.docker)} load", token),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        drain = _drain(proc.stdout, out)
        assert proc.stdin is not None
        try:
            with interrupt.registered(token, _stopper(cluster, node, token, proc)):
                try:
                    with paths.tar.open("rb") as src:
                        _pump(src, proc.stdin, bar)
                except BrokenPipeError:
                    pass
                finally:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass
                rc = proc.wait()
        except KeyboardInterrupt:
            _interrupted(cluster, node, token, proc, f"control->{node.name}", f"{shlex.join(argv)} < {paths.tar}",
                         start)
            raise
        drain.join()
        bar.close(rc == 0)
        output = b"".join(out).decode(errors="replace")
        cluster.ops_log.record(f"control->{node.name}", f"{shlex.join(argv)} < {paths.tar}", rc,
                               time.monotonic() - start, stderr=output)
        now = held(cluster, node, spec.tag)
        if rc != 0 or now is None or now.id != want:
            last = tail(output)
            found = "nothing" if now is None else f"ID {short(now.id)}"
            raise ImagesError(
                f"restoring {spec.tag} on {node.name} failed: docker load exited {rc}"
                + (f" ({last})" if last else "") + f"; {node.name} now holds {found}, expected ID {short(want)}. "
                f"command: {shlex.join(argv)} < {paths.tar}"
            )
        cluster.say(f"{node.name}: {spec.tag} restored, ID {short(want)} ({time.monotonic() - start:.1f} s)")
        restored.append(node.name)
    return restored
