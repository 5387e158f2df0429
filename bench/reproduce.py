"""reproduce.md: the post's reproduce section, from results.json alone (its provenance card and
points), so every number and ID in it is the one results.json holds.

Sections: hardware and topology, image lineage (per node tag, ID, verified versions), launcher,
the launch command as it ran, the exact bench command line, the measured numbers, and the rest
of the card. What the card lists as unknown is said to be unknown, never guessed.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.shapes import ResultsDoc

REPRODUCE_FILE = "reproduce.md"


def bench_command(doc: ResultsDoc) -> str:
    """The `python -m bench` line that re-measures this run with the same settings."""
    s: dict[str, Any] = dict(doc.get("settings") or {})
    conc = ",".join(str(p["concurrency"]) for p in doc["points"])
    args = ["python", "-m", "bench", "--base-url", doc.get("base_url") or "URL",
            "--model", doc["model"], "--label", doc.get("label") or doc["model"],
            "--concurrency", conc, "--input-len", str(s.get("input_len")),
            "--output-len", str(s.get("output_len")), "--api", str(s.get("api"))]
    if s.get("requests_per_point") is not None:
        args += ["--requests", str(s["requests_per_point"])]
    if s.get("warmup") is not None:
        args += ["--warmup", str(s["warmup"])]
    for key, flag in (("slo_ttft_ms", "--slo-ttft-ms"), ("slo_tpot_ms", "--slo-tpot-ms")):
        if s.get(key) is not None:
            args += [flag, str(s[key])]
    return shlex.join(args)


def _or_unknown(value: Any) -> str:
    return "unknown" if value in (None, "", []) else str(value)


def reproduce_markdown(doc: ResultsDoc) -> str:
    card: dict[str, Any] = dict(doc.get("provenance") or {})  # type: ignore[call-overload]
    http = card.get("http") or {}
    lines = [f"## Reproduce: {doc['model']} ({doc.get('label')})", "",
             f"Measured {doc.get('started_at')} .. {doc.get('updated_at')}; server vLLM "
             f"{_or_unknown(http.get('version') or doc.get('server_version'))}; "
             f"provenance: {_or_unknown(card.get('source'))}.", "",
             "### Hardware, topology and image lineage", ""]
    nodes = card.get("nodes") or []
    if nodes:
        lines += ["| node | image | image ID | verified versions | kernel | driver | OS |",
                  "|---|---|---|---|---|---|---|"]
        for n in nodes:
            versions = ", ".join(f"{k} {v}" for k, v in sorted((n.get("versions") or {}).items()))
            lines.append(f"| {n.get('host')} | {_or_unknown(n.get('image_tag'))} | "
                         f"{_or_unknown(n.get('image_id'))} | {_or_unknown(versions)} | "
                         f"{_or_unknown(n.get('kernel'))} | {_or_unknown(n.get('driver'))} | "
                         f"{_or_unknown(n.get('os'))} |")
    else:
        lines.append("Nodes, images and versions: unknown (measured against a bare URL).")
    launcher = card.get("launcher") or {}
    recipe = card.get("recipe") or {}
    lines += ["", f"Launcher commit: {_or_unknown(launcher.get('commit'))}; recipe "
                  f"{_or_unknown(recipe.get('path'))} (sha256 {_or_unknown(recipe.get('sha256'))}); "
                  f"mods: {_or_unknown(card.get('mods'))}; weights: "
                  f"{_or_unknown(card.get('weights'))}.", "",
              "### Launch command, as it ran", "", "```",
              _or_unknown(card.get("command_line")), "```", "",
              "### Bench command", "", "```", bench_command(doc), "```", "",
              "### Numbers", "",
              "| C | ok | output tok/s | TTFT p50 ms | TPOT p50 ms |", "|---|---|---|---|---|"]
    for p in doc["points"]:
        lines.append(f"| {p['concurrency']} | {p['completed']} | {p['output_tok_s']!r} | "
                     f"{p['ttft_ms']['p50']!r} | {p['tpot_ms']['p50']!r} |")
    tool = card.get("tool") or {}
    lines += ["", f"Tool: {tool.get('name')} {tool.get('version')} at commit "
                  f"{_or_unknown(tool.get('commit'))}. Unknown: "
                  f"{', '.join(card.get('unknown') or []) or 'nothing'}.", "",
              "<details><summary>provenance card</summary>", "", "```json",
              json.dumps(card, indent=2, sort_keys=True), "```", "</details>", ""]
    return "\n".join(lines)


def write_reproduce(docs: Sequence[ResultsDoc], folder: str | Path) -> Path:
    """reproduce.md in `folder`, one section per run."""
    path = Path(folder) / REPRODUCE_FILE
    path.write_text("\n".join(reproduce_markdown(d) for d in docs))
    return path
