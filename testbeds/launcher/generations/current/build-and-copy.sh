#!/usr/bin/env bash
# Stand-in for eugr/spark-vllm-docker's build-and-copy.sh of the current generation (028b7ce,
# 2026-07 on): by default it pulls the prebuilt runner eugr/spark-vllm:latest (impossible here:
# no registry, so it fails as an offline pull would); --use-wheels builds from the wheel cache
# .wheel-cache/{flashinfer,vllm}/<profile>/, after trying the release download into it.
# Behaviours and their upstream source: docs/launcher.md.
set -e
cd "$(dirname "$0")"
. ./standin-build-lib.sh

IMAGE_TAG="vllm-node"
IMAGE_TAG_SET=false
PREBUILT_RUNNER_IMAGE="eugr/spark-vllm:latest"
USE_WHEELS=false
REBUILD_FLASHINFER=false
REBUILD_VLLM=false
FORCE_FLASHINFER_DOWNLOAD=false
FORCE_VLLM_DOWNLOAD=false
NO_BUILD=false
PRE_TRANSFORMERS=false
DEFAULT_TORCH_VERSION="2.13.0"
FLASHINFER_RELEASE_TAG="prebuilt-flashinfer-current"
VLLM_RELEASE_TAG="prebuilt-vllm-current"
CLEANUP_MODE="false"
WHEEL_CACHE_ROOT="./.wheel-cache"
FLASHINFER_PROFILE="regular"
VLLM_PROFILE="regular"

try_download_wheels() {
    local TAG="$1"
    local PREFIX="$2"
    local FORCE_DOWNLOAD="${3:-false}"
    local WHEELS_DIR="$4"
    standin_try_download "$TAG" "$PREFIX" "$FORCE_DOWNLOAD" "$WHEELS_DIR"
}

usage() {
    echo "Usage: $0 [OPTIONS]"
    echo "  -t, --tag <tag>               : Image tag (default: 'vllm-node')"
    echo "  --use-wheels                  : Build from precompiled wheels in the wheel cache instead of pulling $PREBUILT_RUNNER_IMAGE"
    echo "  --rebuild-flashinfer          : Force rebuild of FlashInfer wheels"
    echo "  --rebuild-vllm                : Force rebuild of vLLM wheels"
    echo "  --force-flashinfer-download   : Force download of FlashInfer wheels"
    echo "  --force-vllm-download         : Force download of vLLM wheels"
    echo "  --vllm-ref <ref>              : vLLM commit SHA, branch or tag (default: 'main')"
    echo "  -c, --copy-to <hosts>         : Host(s) to copy the image to."
    echo "  --tf5                         : Deprecated: only sets the default tag"
    echo "  --cleanup                     : Remove cached wheels and markers from every profile"
    echo "  --config                      : Path to .env configuration file"
    echo "  -h, --help                    : Show this help message"
    exit 1
}

while [[ "$#" -gt 0 ]]; do
    case $1 in
        -t|--tag) IMAGE_TAG="$2"; IMAGE_TAG_SET=true; shift ;;
        --use-wheels) USE_WHEELS=true ;;
        --gpu-arch) shift ;;
        --torch-version) standin_cannot "$1" ;;
        --rebuild-flashinfer) REBUILD_FLASHINFER=true ;;
        --rebuild-vllm) REBUILD_VLLM=true ;;
        --force-flashinfer-download) FORCE_FLASHINFER_DOWNLOAD=true ;;
        --force-vllm-download) FORCE_VLLM_DOWNLOAD=true ;;
        --force-download) FORCE_FLASHINFER_DOWNLOAD=true; FORCE_VLLM_DOWNLOAD=true ;;
        --vllm-ref) standin_cannot "$1" ;;
        --vllm-source-dir) standin_cannot "$1" ;;
        --exp-b12x) standin_cannot "$1" ;;
        --exp-mxfp4|--experimental-mxfp4) standin_cannot "$1" ;;
        -c|--copy-to|--copy-to-host|--copy-to-hosts) standin_refuse_copy "$1" ;;
        --copy-parallel) standin_refuse_copy "$1" ;;
        -j|--build-jobs) shift ;;
        -u|--user) shift ;;
        --tf5|--pre-tf|--pre-transformers) PRE_TRANSFORMERS=true ;;
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
if [ "$PRE_TRANSFORMERS" = true ]; then
    echo "Warning: --tf5/--pre-tf/--pre-transformers is deprecated; vLLM now uses Transformers v5 by default."
    echo "         No Transformers override will be applied; image tag remains $IMAGE_TAG."
fi
FLASHINFER_WHEELS_DIR="$WHEEL_CACHE_ROOT/flashinfer/$FLASHINFER_PROFILE"
VLLM_WHEELS_DIR="$WHEEL_CACHE_ROOT/vllm/$VLLM_PROFILE"
if [ "$NO_BUILD" = true ]; then
    echo "Error: --no-build requires --copy-to to be specified"
    exit 1
fi
CUSTOM_BUILD_REQUESTED=false
for f in "$REBUILD_FLASHINFER" "$REBUILD_VLLM" "$FORCE_FLASHINFER_DOWNLOAD" "$FORCE_VLLM_DOWNLOAD"; do
    [ "$f" = true ] && CUSTOM_BUILD_REQUESTED=true
done
if [[ "$CLEANUP_MODE" == "true" ]]; then
    echo "Cleaning up wheel cache profiles..."
    for cache_dir in "$WHEEL_CACHE_ROOT"/flashinfer/* "$WHEEL_CACHE_ROOT"/vllm/*; do
        [ -d "$cache_dir" ] || continue
        rm -f "$cache_dir"/*.whl "$cache_dir"/.*-commit "$cache_dir"/.*-arch
        echo "Cleaned $cache_dir"
    done
    echo "Cleanup complete."
fi
if [ "$USE_WHEELS" = false ] && [ "$CUSTOM_BUILD_REQUESTED" = false ]; then
    echo "Using prebuilt runner image ${PREBUILT_RUNNER_IMAGE}..."
    echo "Error response from daemon: Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host (stand-in: no registry here)"
    exit 1
fi
mkdir -p "$FLASHINFER_WHEELS_DIR" "$VLLM_WHEELS_DIR"
echo "Using FlashInfer wheel profile: $FLASHINFER_PROFILE ($FLASHINFER_WHEELS_DIR)"
echo "Using vLLM wheel profile: $VLLM_PROFILE ($VLLM_WHEELS_DIR)"

[ "$REBUILD_FLASHINFER" = true ] && standin_cannot --rebuild-flashinfer
if try_download_wheels "$FLASHINFER_RELEASE_TAG" "flashinfer" "$FORCE_FLASHINFER_DOWNLOAD" "$FLASHINFER_WHEELS_DIR"; then
    echo "FlashInfer wheels ready."
elif compgen -G "$FLASHINFER_WHEELS_DIR/flashinfer*.whl" > /dev/null 2>&1; then
    echo "Download failed — using existing local FlashInfer wheels."
else
    echo "Error: No precompiled FlashInfer wheels are available and the download failed."
    echo "       Re-run with --rebuild-flashinfer to explicitly build FlashInfer from source."
    exit 1
fi
[ "$REBUILD_VLLM" = true ] && standin_cannot --rebuild-vllm
if try_download_wheels "$VLLM_RELEASE_TAG" "vllm" "$FORCE_VLLM_DOWNLOAD" "$VLLM_WHEELS_DIR"; then
    echo "vLLM wheels ready."
elif compgen -G "$VLLM_WHEELS_DIR/vllm*.whl" > /dev/null 2>&1; then
    echo "Download failed — using existing local vLLM wheels."
else
    echo "Error: No precompiled vLLM wheels are available and the download failed."
    echo "       Re-run with --rebuild-vllm to explicitly build vLLM from source."
    exit 1
fi

VLLM_VERSION=$(ls "$VLLM_WHEELS_DIR"/vllm-*.whl 2>/dev/null | head -1 | sed 's|.*/vllm-||;s|-.*||')
standin_runner_build "$IMAGE_TAG" "$VLLM_VERSION" 5.2.0 -f Dockerfile
standin_timing
