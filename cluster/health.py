"""One look at the head's vLLM API, classified for a watcher: ready, loading, down or unreachable.

`vllm serve` binds its port early and answers HTTP only once the engine is up, so while a model
loads the port either answers 503 (the simulated endpoint) or accepts and stays silent (vLLM);
both mean "a server is there, loading". A refused connection means nothing listens: before the
launch that is normal, after a server was seen it means the engine process is gone.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass

READY, LOADING, DOWN, UNREACHABLE = "ready", "loading", "down", "unreachable"


@dataclass(frozen=True)
class Probe:
    state: str  # READY, LOADING, DOWN or UNREACHABLE
    status: int | None  # the HTTP status, when one came back
    detail: str

    @property
    def listening(self) -> bool:
        """A server holds the port (whether or not it is ready)."""
        return self.state in (READY, LOADING)


def probe(host: str, port: int, path: str = "/health", timeout: float = 1.0) -> Probe:
    """GET `path` once. Connect and read are told apart: a refused or failed connect says
    nothing listens (or the host is away); a read that times out says the port is held."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        try:
            conn.connect()
        except ConnectionRefusedError:
            return Probe(DOWN, None, f"connection refused: nothing listens on {host}:{port}")
        except OSError as e:
            return Probe(UNREACHABLE, None, f"cannot connect to {host}:{port}: {e}")
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
        except TimeoutError:
            return Probe(LOADING, None, f"port {port} accepts, no HTTP answer within {timeout:g} s")
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            return Probe(LOADING, None, f"port {port} accepts, then {type(e).__name__}")
        if resp.status == 200:
            return Probe(READY, 200, "HTTP 200")
        return Probe(LOADING, resp.status, f"HTTP {resp.status} {resp.reason}".strip())
    finally:
        conn.close()


def get_json(host: str, port: int, path: str, timeout: float = 3.0) -> object | None:
    """GET a JSON document; None when nothing (valid) answers (the usual case when nothing is served)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body.decode()) if resp.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def served_ids(doc: object) -> list[str]:
    """The model ids a `/v1/models` document lists."""
    if not isinstance(doc, dict):
        return []
    return [str(m.get("id")) for m in doc.get("data", []) if isinstance(m, dict)]


def version_of(doc: object) -> str | None:
    """The version a `/version` document reports."""
    return str(doc["version"]) if isinstance(doc, dict) and doc.get("version") else None


@dataclass(frozen=True)
class Generated:
    ok: bool             # a completion came back with at least one token
    status: int | None   # its HTTP status, when one came back
    detail: str


def first_token(host: str, port: int, model: str, timeout: float = 30.0) -> Generated:
    """POST one tiny completion (1 token, greedy). `/health` answers 200 as soon as the API
    server is up, before the engine has generated anything (and stays 200 when it is wedged):
    only a returned token says the model serves."""
    body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}).encode()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    except TimeoutError:
        return Generated(False, None, f"no completion within {timeout:g} s")
    except (OSError, http.client.HTTPException) as e:
        return Generated(False, None, f"completion failed: {type(e).__name__}: {e}")
    finally:
        conn.close()
    if resp.status != 200:
        return Generated(False, resp.status, f"completion answered HTTP {resp.status}: {raw[:120].decode(errors='replace')}")
    try:
        doc = json.loads(raw.decode())
        tokens = int((doc.get("usage") or {}).get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return Generated(False, 200, "completion answer is not vLLM's JSON")
    if tokens < 1:
        return Generated(False, 200, "completion returned no token")
    return Generated(True, 200, f"1 token in reply to a {len(body)}-byte request")
