#!/bin/bash
# Stand-in for eugr/spark-vllm-docker's build-and-copy.sh at 74c02c3 (2026-01-28): one docker
# build; vLLM from source by default, or with --use-wheels [nightly|release] prebuilt vLLM from
# the internet through Dockerfile.wheels (the local wheels/ directory is not used at all).
# Behaviours and their upstream source: docs/launcher.md.
set -e
cd "$(dirname "$0")"
. ./standin-build-lib.sh

IMAGE_TAG="vllm-node"
REBUILD_DEPS=false
REBUILD_VLLM=false
VLLM_REF="main"
USE_WHEELS_MODE=""
PRE_FLASHINFER=false
PRE_TRANSFORMERS=false
NO_BUILD=false
# what "the internet" serves here: the nightly vLLM, and a source build of VLLM_REF
NIGHTLY_VLLM="0.15.0rc2.dev85+g5e1d3c0a7"
SOURCE_VLLM="$(cat standin-vllm-source 2>/dev/null || echo 0.14.1.dev312+gmain)"

usage() {
    echo "Usage: $0 [OPTIONS]"
    echo "  -t, --tag <tag>           : Image tag (default: 'vllm-node')"
    echo "  --rebuild-deps            : Set cache bust for dependencies"
    echo "  --rebuild-vllm            : Set cache bust for vllm"
    echo "  --triton-ref <ref>        : Triton commit SHA, branch or tag (default: 'v3.5.1')"
    echo "  --vllm-ref <ref>          : vLLM commit SHA, branch or tag (default: 'main')"
    echo "  -c, --copy-to <hosts>     : Host(s) to copy the image to. Accepts comma or space-delimited lists after the flag."
    echo "      --copy-to-host        : Alias for --copy-to (backwards compatibility)."
    echo "      --copy-parallel       : Copy to all hosts in parallel instead of serially."
    echo "  -j, --build-jobs <jobs>   : Number of concurrent build jobs (default: \${BUILD_JOBS})"
    echo "  -u, --user <user>         : Username for ssh command (default: \$USER)"
    echo "  --use-wheels [mode]       : Use prebuilt vLLM wheels. Mode can be 'nightly' (default) or 'release'."
    echo "  --pre-flashinfer          : Use pre-release versions of FlashInfer"
    echo "  --pre-tf, --pre-transformers : Install transformers 5.0.0rc0 or higher"
    echo "  --no-build                : Skip building, only copy image (requires --copy-to)"
    echo "  -h, --help                : Show this help message"
    exit 1
}

while [[ "$#" -gt 0 ]]; do
    case $1 in
        -t|--tag) IMAGE_TAG="$2"; shift ;;
        --rebuild-deps) REBUILD_DEPS=true ;;
        --rebuild-vllm) REBUILD_VLLM=true ;;
        --triton-ref) shift ;;
        --vllm-ref) VLLM_REF="$2"; shift ;;
        -c|--copy-to|--copy-to-host|--copy-to-hosts) standin_refuse_copy "$1" ;;
        -j|--build-jobs) shift ;;
        -u|--user) shift ;;
        --copy-parallel) standin_refuse_copy "$1" ;;
        --use-wheels)
            if [[ "$2" != -* && -n "$2" ]]; then
                if [[ "$2" != "nightly" && "$2" != "release" ]]; then
                    echo "Error: --use-wheels argument must be 'nightly' or 'release'."
                    exit 1
                fi
                USE_WHEELS_MODE="$2"
                shift
            else
                USE_WHEELS_MODE="nightly"
            fi
            ;;
        --pre-flashinfer) PRE_FLASHINFER=true ;;
        --pre-tf|--pre-transformers) PRE_TRANSFORMERS=true ;;
        --no-build) NO_BUILD=true ;;
        -h|--help) usage ;;
        *) echo "Unknown parameter passed: $1"; usage ;;
    esac
    shift
done

if [ "$NO_BUILD" = true ]; then
    echo "Error: --no-build requires --copy-to to be specified"
    exit 1
fi
ARGS=()
if [ -n "$USE_WHEELS_MODE" ]; then
    echo "Using pre-built vLLM wheels (mode: $USE_WHEELS_MODE)"
    ARGS+=("-f" "Dockerfile.wheels")
    [ "$USE_WHEELS_MODE" = "release" ] && ARGS+=("--build-arg" "WHEELS_FROM_GITHUB_RELEASE=1")
    VLLM_VERSION="$NIGHTLY_VLLM"
else
    echo "Building vLLM from source"
    ARGS+=("-f" "Dockerfile")
    VLLM_VERSION="$SOURCE_VLLM"
fi
ARGS+=("--build-arg" "VLLM_REF=$VLLM_REF")
TRANSFORMERS=4.57.6
if [ "$PRE_TRANSFORMERS" = true ]; then
    echo "Using transformers>=5.0.0..."
    TRANSFORMERS=5.0.0
fi
standin_runner_build "$IMAGE_TAG" "$VLLM_VERSION" "$TRANSFORMERS" "${ARGS[@]}"
standin_timing
