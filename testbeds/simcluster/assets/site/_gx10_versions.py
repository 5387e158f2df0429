"""What the test image "installed": the `expression<TAB>value` table in /etc/gx10-versions, which
the launcher stand-in's Dockerfiles rewrite. The stub packages read it so a real python3 in the
image answers `import torch; print(torch.__version__, ...)` as the real image would."""


def table() -> dict[str, str]:
    rows = {}
    with open("/etc/gx10-versions") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            rows[key] = value
    return rows


def value(key: str) -> str:
    try:
        return table()[key]
    except KeyError:
        raise ImportError(f"the test image does not carry {key} (/etc/gx10-versions)") from None
