"""probe() tells the launcher's generations apart from their scripts' own lines.

The fixtures are short excerpts of the real upstream scripts (eugr/spark-vllm-docker; the file
and version of each are in docs/launcher.md), trimmed to the lines the probe reads plus a few
around them, so a probe keyed on text the real scripts do not have fails here.
"""

from __future__ import annotations

import pytest

from cluster.launch.generation import case_flags, parse_read, probe

# build-and-copy.sh, seed era (index version with `local WHEELS_DIR="./wheels"`, ~2026-05/06)
SEED_BUILD = """#!/bin/bash
set -e
IMAGE_TAG="vllm-node"
WHEELS_REPO="eugr/spark-vllm-docker"
FLASHINFER_RELEASE_TAG="prebuilt-flashinfer-current"
try_download_wheels() {
    local TAG="$1"
    local PREFIX="$2"
    local FORCE_DOWNLOAD="${3:-false}"
    local WHEELS_DIR="./wheels"
}
while [[ "$#" -gt 0 ]]; do
    case $1 in
        -t|--tag) IMAGE_TAG="$2"; IMAGE_TAG_SET=true; shift ;;
        --gpu-arch) GPU_ARCH_LIST="$2"; shift ;;
        --rebuild-flashinfer) REBUILD_FLASHINFER=true ;;
        --rebuild-vllm) REBUILD_VLLM=true ;;
        --vllm-ref) VLLM_REF="$2"; VLLM_REF_SET=true; shift ;;
        -c|--copy-to|--copy-to-host|--copy-to-hosts)
        --copy-parallel) PARALLEL_COPY=true ;;
        --tf5|--pre-tf|--pre-transformers) PRE_TRANSFORMERS=true ;;
        --apply-vllm-pr)
        --no-build) NO_BUILD=true ;;
        --cleanup) CLEANUP_MODE=true ;;
        -h|--help) usage ;;
        *) echo "Unknown parameter passed: $1"; usage ;;
    esac
    shift
done
"""
# launch-cluster.sh, Ray-default era (index versions with `--no-ray) NO_RAY_MODE="true"`)
SEED_LAUNCH = """#!/bin/bash
SCRIPT_DIR="$(dirname "$(realpath "$0")")"
CONFIG_FILE=""  # Will be set to default after argument parsing
SOLO_MODE="false"
NO_RAY_MODE="false"
while [[ "$#" -gt 0 ]]; do
    case $1 in
        -n|--nodes) NODES_ARG="$2"; shift ;;
        --master-port|--head-port) MASTER_PORT="$2"; shift ;;
        --solo) SOLO_MODE="true" ;;
        --no-ray) NO_RAY_MODE="true" ;;
    esac
done
if [[ -z "$CONFIG_FILE" ]]; then
    CONFIG_FILE="$SCRIPT_DIR/.env"
fi
        export "DOTENV_$key=$value"
"""
# build-and-copy.sh at 74c02c3 (2026-01-28, the fetch mirror), lines 73, 124-160
JAN_BUILD = """    echo "  --use-wheels [mode]       : Use prebuilt vLLM wheels. Mode can be 'nightly' (default) or 'release'."
while [[ "$#" -gt 0 ]]; do
    case $1 in
        -t|--tag) IMAGE_TAG="$2"; shift ;;
        --rebuild-deps) REBUILD_DEPS=true ;;
        --rebuild-vllm) REBUILD_VLLM=true ;;
        --use-wheels)
            if [[ "$2" != -* && -n "$2" ]]; then
        --pre-tf|--pre-transformers) PRE_TRANSFORMERS=true ;;
        *) echo "Unknown parameter passed: $1"; usage ;;
    esac
done
        CMD+=("-f" "Dockerfile.wheels")
"""
# launch-cluster.sh at 74c02c3: Ray only, no NO_RAY_MODE, no .env
JAN_LAUNCH = """while [[ "$#" -gt 0 ]]; do
    case $1 in
        -n|--nodes) NODES_ARG="$2"; shift ;;
        --apply-mod) MOD_PATHS+=("$2"); shift ;;
    esac
done
        docker exec "$CONTAINER_NAME" ray status || echo "Failed to get ray status."
"""
# build-and-copy.sh at 028b7ce (current)
CURRENT_BUILD = """PREBUILT_RUNNER_IMAGE="eugr/spark-vllm:latest"
USE_WHEELS=false
WHEEL_CACHE_ROOT="./.wheel-cache"
FLASHINFER_PROFILE="regular"
    case $1 in
        --use-wheels) USE_WHEELS=true ;;
        --cleanup) CLEANUP_MODE=true ;;
        *) echo "Unknown parameter passed: $1"; usage ;;
    esac
"""
# launch-cluster.sh at 013cd2e (current)
CURRENT_LAUNCH = """SOLO_MODE="false"
NO_RAY_MODE="true"
NO_RAY_EXPLICIT="false"
    case $1 in
        --ray)
            NO_RAY_MODE="false"
        --no-ray)
            NO_RAY_MODE="true"
    esac
    CONFIG_FILE="$SCRIPT_DIR/.env"
        export "DOTENV_$key=$value"
"""


@pytest.mark.parametrize(
    ("texts", "generation", "use_wheels", "wheel_dir", "ray", "env"),
    [
        ({"build-and-copy.sh": SEED_BUILD, "launch-cluster.sh": SEED_LAUNCH, "run-recipe.py": ""},
         "seed", "absent", "wheels", True, True),
        ({"build-and-copy.sh": JAN_BUILD, "launch-cluster.sh": JAN_LAUNCH},
         "jan26", "nightly", "wheels", True, False),
        ({"build-and-copy.sh": CURRENT_BUILD, "launch-cluster.sh": CURRENT_LAUNCH, "run-recipe.py": ""},
         "current", "local-cache", ".wheel-cache", False, True),
    ],
)
def test_probe_tells_generations_apart(texts: dict[str, str], generation: str, use_wheels: str,
                                       wheel_dir: str, ray: bool, env: bool) -> None:
    info = probe(texts, "abc123", "2026-06-01T00:00:00+00:00")
    assert (info.generation, info.use_wheels, info.wheel_dir, info.ray_default, info.env_file) == (
        generation, use_wheels, wheel_dir, ray, env)
    assert info.commit == "abc123" and generation in info.describe()


def test_probe_reads_flags_from_the_case_labels() -> None:
    seed = probe({"build-and-copy.sh": SEED_BUILD, "launch-cluster.sh": SEED_LAUNCH, "run-recipe.py": ""})
    assert {"--rebuild-vllm", "--tf5", "--pre-tf", "-c", "--copy-to-hosts", "--cleanup"} <= seed.build_flags
    assert "--use-wheels" not in seed.build_flags
    assert "--no-ray" in seed.launch_flags and "--ray" not in seed.launch_flags
    assert "--ray" in probe({"build-and-copy.sh": CURRENT_BUILD, "launch-cluster.sh": CURRENT_LAUNCH}).launch_flags
    assert case_flags('        *) echo "Unknown parameter passed: $1"; usage ;;') == frozenset()


def test_the_no_ray_assignment_inside_a_case_is_not_the_default() -> None:
    # seed's `--no-ray) NO_RAY_MODE="true"` must not read as a no-Ray default
    assert probe({"build-and-copy.sh": SEED_BUILD, "launch-cluster.sh": SEED_LAUNCH}).ray_default
    only_case = SEED_LAUNCH.replace('NO_RAY_MODE="false"\n', "")
    assert 'NO_RAY_MODE="true"' in only_case and probe({"launch-cluster.sh": only_case}).ray_default


def test_missing_or_foreign_scripts_are_unknown() -> None:
    assert probe({}).generation == "unknown"
    assert probe({"build-and-copy.sh": "echo hi\n", "launch-cluster.sh": "echo hi\n"}).generation == "unknown"


def test_parse_read_splits_files_and_git_line() -> None:
    out = ("=====gx10-ops-file git\nabc 2026-06-01T00:00:00+00:00\n=====gx10-ops-file build-and-copy.sh\n"
           "line1\nline2\n=====gx10-ops-file run-recipe.py\n\n")
    parsed = parse_read(out)
    assert parsed is not None
    texts, commit, date = parsed
    assert commit == "abc" and date == "2026-06-01T00:00:00+00:00"
    assert texts["build-and-copy.sh"].startswith("line1\nline2") and "run-recipe.py" in texts
    assert parse_read("NOREPO\n") is None
    assert parse_read("=====gx10-ops-file git\n")[1] is None  # type: ignore[index]


def test_the_launchers_own_error_line_is_found_before_its_usage() -> None:
    from cluster.images.build import launcher_error_line

    # seed-era build-and-copy.sh given --use-wheels: the line, then the usage text (exit 1)
    out = ("Unknown parameter passed: --use-wheels\nUsage: ./build-and-copy.sh [OPTIONS]\n"
           "  -t, --tag <tag>               : Image tag (default: 'vllm-node')\n"
           "  -h, --help                    : Show this help message\n")
    assert launcher_error_line(out) == "Unknown parameter passed: --use-wheels"
    out = ("Using FlashInfer wheel profile: regular (./.wheel-cache/flashinfer/regular)\n"
           "Error: No precompiled vLLM wheels are available and the download failed.\n"
           "       Re-run with --rebuild-vllm to explicitly build vLLM from source.\n")
    assert launcher_error_line(out) == "Error: No precompiled vLLM wheels are available and the download failed."
    assert launcher_error_line("STEP 1/3: FROM base\nall fine\n") is None
