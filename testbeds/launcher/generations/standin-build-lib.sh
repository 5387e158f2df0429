# Shared by the per-generation build-and-copy.sh stand-ins (sourced; bash). What is reproduced,
# and from which upstream file, is in docs/launcher.md ("stand-in behaviours").
#
# The GitHub release the real script downloads from ("prebuilt-flashinfer-current",
# "prebuilt-vllm-current") is ./standin-release/<TAG>/ here: its *.whl files are the release
# assets (their mtime is the HTTP Last-Modified), an optional `commit` file the release page's
# commit. No such directory: the release cannot be fetched (as offline).

standin_mtime() { stat -c %Y "$1" 2>/dev/null || echo 0; }

# standin_try_download TAG PREFIX FORCE WHEELS_DIR: try_download_wheels as read upstream.
standin_try_download() {
    local TAG="$1" PREFIX="$2" FORCE_DOWNLOAD="${3:-false}" WHEELS_DIR="$4"
    local RELEASE="./standin-release/$TAG"
    mkdir -p "$WHEELS_DIR"
    if [ ! -d "$RELEASE" ]; then
        echo "Could not fetch release assets for '$TAG' — skipping download."
        return 1
    fi
    local assets=() f
    for f in "$RELEASE/${PREFIX}"*.whl; do [ -f "$f" ] && assets+=("$f"); done
    if [ "${#assets[@]}" -eq 0 ]; then
        echo "No assets found matching prefix: $PREFIX" >&2
        return 1
    fi
    local REMOTE_COMMIT=""
    [ -f "$RELEASE/commit" ] && REMOTE_COMMIT=$(cat "$RELEASE/commit")
    if [ "$FORCE_DOWNLOAD" = true ]; then
        echo "Force downloading $PREFIX wheels from release '$TAG'..."
    else
        local LOCAL_COMMIT="" present=true name
        [ -f "$WHEELS_DIR/.${PREFIX}-commit" ] && LOCAL_COMMIT=$(cat "$WHEELS_DIR/.${PREFIX}-commit")
        for f in "${assets[@]}"; do
            [ -f "$WHEELS_DIR/$(basename "$f")" ] || { present=false; break; }
        done
        if [ "$present" = false ]; then
            # local_wheels_are_newer_than_release: oldest local mtime >= newest remote
            local oldest="" newest=0 ts
            for f in "$WHEELS_DIR/${PREFIX}"*.whl; do
                [ -f "$f" ] || continue
                ts=$(standin_mtime "$f")
                if [ -z "$oldest" ] || [ "$ts" -lt "$oldest" ]; then oldest=$ts; fi
            done
            for f in "${assets[@]}"; do
                ts=$(standin_mtime "$f"); [ "$ts" -gt "$newest" ] && newest=$ts
            done
            if [ -n "$oldest" ] && [ "$oldest" -ne 0 ] && [ "$oldest" -ge "$newest" ]; then
                echo "Local $PREFIX wheels are newer than release '$TAG' — skipping download."
                return 0
            fi
        else
            if [ -n "$REMOTE_COMMIT" ] && [ -n "$LOCAL_COMMIT" ] && [[ "$LOCAL_COMMIT" == "$REMOTE_COMMIT"* ]]; then
                echo "Commit hash matches ($REMOTE_COMMIT) — wheels are up to date."
                return 0
            fi
            local newer=false
            for f in "${assets[@]}"; do
                name=$(basename "$f")
                if [ "$(standin_mtime "$f")" -gt "$(standin_mtime "$WHEELS_DIR/$name")" ]; then newer=true; break; fi
            done
            if [ "$newer" = false ]; then
                echo "All $PREFIX wheels are up to date — skipping download."
                return 0
            fi
        fi
    fi
    # Back up existing wheels so we never leave a mix of old and new on failure
    local DL_BACKUP="$WHEELS_DIR/.backup-download-${PREFIX}"
    rm -rf "$DL_BACKUP" && mkdir -p "$DL_BACKUP"
    for f in "$WHEELS_DIR/${PREFIX}"*.whl; do [ -f "$f" ] && mv "$f" "$DL_BACKUP/"; done
    for f in "$WHEELS_DIR/.${PREFIX}"*; do [ -f "$f" ] && mv "$f" "$DL_BACKUP/"; done
    for f in "${assets[@]}"; do
        echo "Downloading $(basename "$f")..."
        cat "$f" > "$WHEELS_DIR/$(basename "$f")"   # a fresh file, like curl -o
    done
    rm -rf "$DL_BACKUP"
    if [ -n "$REMOTE_COMMIT" ]; then
        echo "$REMOTE_COMMIT" > "$WHEELS_DIR/.${PREFIX}-commit"
        echo "Recorded $PREFIX commit hash: $REMOTE_COMMIT"
    fi
    return 0
}

# standin_runner_build TAG VLLM TRANSFORMERS [docker build args...]: the runner image, built
# for real (FROM the busybox test base) and reporting the versions a real build would install;
# torch and CUDA come from ./standin-torch, so a test can make a build regress.
standin_runner_build() {
    local tag="$1" vllm="$2" transformers="$3"; shift 3
    local torch cuda
    read -r torch cuda < standin-torch
    local CMD=(docker build -t "$tag" "$@" --build-arg "TORCH=$torch" --build-arg "CUDA=$cuda"
               --build-arg "VLLM=$vllm" --build-arg "TRANSFORMERS=$transformers" .)
    echo "Building runner image with command: ${CMD[*]}"
    "${CMD[@]}"
}

standin_refuse_copy() {
    echo "stand-in build-and-copy.sh: $1 would copy an unverified image (gx10-ops must never ask for it)" >&2
    exit 64
}

standin_cannot() {
    echo "stand-in build-and-copy.sh: $1 is not modelled (it compiles from source)" >&2
    exit 64
}

standin_timing() {
    echo "No host specified, skipping copy."
    echo ""
    echo "========================================="
    echo "         TIMING STATISTICS"
    echo "========================================="
}
