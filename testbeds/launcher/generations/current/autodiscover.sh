# Stand-in for autodiscover.sh (sourced by the launcher's scripts). detect_interfaces as read
# upstream: nothing to do when both ETH_IF and IB_IF are set, else it needs ibdev2netdev.
detect_interfaces() {
    if [ -n "$ETH_IF" ] && [ -n "$IB_IF" ]; then
        return 0
    fi
    if ! command -v ibdev2netdev >/dev/null 2>&1; then
        echo "Error: ibdev2netdev not found. Cannot auto-detect interfaces."
        return 1
    fi
    return 0
}
