#!/bin/bash
# Stand-in for eugr/spark-vllm-docker's build-and-copy.sh as the seed era had it (about
# 2026-05/06): no --use-wheels (rejected as an unknown parameter), one ./wheels directory,
# and a default run that first tries the current release wheels and replaces the local ones
# unless they are newer. Behaviours and their upstream source: docs/launcher.md.
set -e
cd "$(dirname "$0")"
. ./standin-build-lib.sh

# Default values
IMAGE_TAG="vllm-node"
IMAGE_TAG_SET=false
REBUILD_FLASHINFER=false
REBUILD_VLLM=false
FORCE_FLASHINFER_DOWNLOAD=false
FORCE_VLLM_DOWNLOAD=false
NO_BUILD=false
PRE_TRANSFORMERS=false
WHEELS_REPO="eugr/spark-vllm-docker"
FLASHINFER_RELEASE_TAG="prebuilt-flashinfer-current"
VLLM_RELEASE_TAG="prebuilt-vllm-current"
CLEANUP_MODE="false"

try_download_wheels() {
    local TAG="$1"
    local PREFIX="$2"
    local FORCE_DOWNLOAD="${3:-false}"
    local WHEELS_DIR="./wheels"
    standin_try_download "$TAG" "$PREFIX" "$FORCE_DOWNLOAD" "$WHEELS_DIR"
}

usage() {
    echo "Usage: $0 [OPTIONS]"
    echo "  -t, --tag <tag>               : Image tag (default: 'vllm-node', 'vllm-node-tf5' with --tf5, 'vllm-node-mxfp4' with --exp-mxfp4)"
    echo "  --gpu-arch <arch>             : GPU architecture (default: '12.1a')"
    echo "  --rebuild-flashinfer          : Force rebuild of FlashInfer wheels (ignore cached wheels)"
    echo "  --rebuild-vllm                : Force rebuild of vLLM wheels (ignore cached wheels)"
    echo "  --force-flashinfer-download   : Force download of FlashInfer wheels (skip cached wheel checks)"
    echo "  --force-vllm-download         : Force download of vLLM wheels (skip cached wheel checks)"
    echo "  --force-download              : Force download of all prebuilt wheels (skip cached wheel checks)"
    echo "  --vllm-ref <ref>              : vLLM commit SHA, branch or tag (default: 'main')"
    echo "  --flashinfer-ref <ref>        : FlashInfer commit SHA, branch or tag (default: 'main')"
    echo "  -c, --copy-to <hosts>         : Host(s) to copy the image to. Accepts comma or space-delimited lists."
    echo "      --copy-to-host            : Alias for --copy-to (backwards compatibility)."
    echo "      --copy-parallel           : Copy to all hosts in parallel instead of serially."
    echo "  -j, --build-jobs <jobs>       : Number of concurrent build jobs (default: 16)"
    echo "  -u, --user <user>             : Username for ssh command (default: \$USER)"
    echo "  --tf5                         : Install transformers>=5 (aliases: --pre-tf, --pre-transformers)"
    echo "  --exp-mxfp4, --experimental-mxfp4 : Build with experimental native MXFP4 support"
    echo "  --apply-vllm-pr <pr-num>      : Apply a specific PR patch to vLLM source. Can be specified multiple times."
    echo "  --apply-flashinfer-pr <pr-num>: Apply a specific PR patch to FlashInfer source. Can be specified multiple times."
    echo "  --full-log                    : Enable full build logging (--progress=plain)"
    echo "  --no-build                    : Skip building, only copy image (requires --copy-to)"
    echo "  --network <network>           : Docker network to use during build"
    echo "  --cleanup                     : Remove all *.whl and *.-commit files in wheels directory"
    echo "  --config                      : Path to .env configuration file (default: .env in script directory)"
    echo "  --setup                       : Force autodiscovery and save configuration (even if .env exists)"
    echo "  -h, --help                    : Show this help message"
    exit 1
}

while [[ "$#" -gt 0 ]]; do
    case $1 in
        -t|--tag) IMAGE_TAG="$2"; IMAGE_TAG_SET=true; shift ;;
        --gpu-arch) shift ;;
        --rebuild-flashinfer) REBUILD_FLASHINFER=true ;;
        --rebuild-vllm) REBUILD_VLLM=true ;;
        --force-flashinfer-download) FORCE_FLASHINFER_DOWNLOAD=true ;;
        --force-vllm-download) FORCE_VLLM_DOWNLOAD=true ;;
        --force-download) FORCE_FLASHINFER_DOWNLOAD=true; FORCE_VLLM_DOWNLOAD=true ;;
        --vllm-ref) standin_cannot "$1" ;;
        --flashinfer-ref) standin_cannot "$1" ;;
        -c|--copy-to|--copy-to-host|--copy-to-hosts) standin_refuse_copy "$1" ;;
        -j|--build-jobs) shift ;;
        -u|--user) shift ;;
        --copy-parallel) standin_refuse_copy "$1" ;;
        --tf5|--pre-tf|--pre-transformers) PRE_TRANSFORMERS=true ;;
        --exp-mxfp4|--experimental-mxfp4) standin_cannot "$1" ;;
        --apply-vllm-pr) standin_cannot "$1" ;;
        --apply-flashinfer-pr) standin_cannot "$1" ;;
        --full-log) ;;
        --no-build) NO_BUILD=true ;;
        --cleanup) CLEANUP_MODE=true ;;
        --network) shift ;;
        --config) shift ;;
        --setup) ;;
        -h|--help) usage ;;
        *) echo "Unknown parameter passed: $1"; usage ;;
    esac
    shift
done

if [ "$IMAGE_TAG_SET" = false ] && [ "$PRE_TRANSFORMERS" = true ]; then
    IMAGE_TAG="vllm-node-tf5"
fi
if [ "$NO_BUILD" = true ]; then
    echo "Error: --no-build requires --copy-to to be specified"
    exit 1
fi
if [[ "$CLEANUP_MODE" == "true" ]]; then
    echo "Cleaning up wheels directory..."
    rm -f ./wheels/*.whl ./wheels/.*-commit
    echo "Cleanup complete."
fi
mkdir -p ./wheels

# Phase 0: NCCL wheel, exported afresh into ./wheels on every build
echo "Building/exporting NCCL wheel..."
rm -f ./wheels/nvidia_nccl_cu13-*.whl
echo stand-in > ./wheels/nvidia_nccl_cu13-2.28.9-py3-none-manylinux_2_18_aarch64.whl
echo "NCCL wheel exported: ./wheels/nvidia_nccl_cu13-2.28.9-py3-none-manylinux_2_18_aarch64.whl"

# Phase 1 and 2: FlashInfer, then vLLM wheels
[ "$REBUILD_FLASHINFER" = true ] && standin_cannot --rebuild-flashinfer
if try_download_wheels "$FLASHINFER_RELEASE_TAG" "flashinfer" "$FORCE_FLASHINFER_DOWNLOAD"; then
    echo "FlashInfer wheels ready."
elif compgen -G "./wheels/flashinfer*.whl" > /dev/null 2>&1; then
    echo "Download failed — using existing local FlashInfer wheels."
else
    echo "No FlashInfer wheels available (download failed) — building..."
    standin_cannot "building FlashInfer"
fi
[ "$REBUILD_VLLM" = true ] && standin_cannot --rebuild-vllm
if try_download_wheels "$VLLM_RELEASE_TAG" "vllm" "$FORCE_VLLM_DOWNLOAD"; then
    echo "vLLM wheels ready."
elif compgen -G "./wheels/vllm*.whl" > /dev/null 2>&1; then
    echo "Download failed — using existing local vLLM wheels."
else
    echo "No vLLM wheels available (download failed) — building..."
    standin_cannot "building vLLM"
fi

# Phase 3: Runner image
if ! compgen -G "./wheels/*.whl" > /dev/null 2>&1; then
    echo "Error: No wheel files found in ./wheels/ — cannot build runner image."
    exit 1
fi
VLLM_VERSION=$(ls ./wheels/vllm-*.whl 2>/dev/null | head -1 | sed 's|.*/vllm-||;s|-.*||')
TRANSFORMERS=4.57.6
if [ "$PRE_TRANSFORMERS" = true ]; then
    echo "Using transformers>=5.0.0..."
    TRANSFORMERS=5.0.0
fi
standin_runner_build "$IMAGE_TAG" "$VLLM_VERSION" "$TRANSFORMERS" -f Dockerfile
standin_timing
