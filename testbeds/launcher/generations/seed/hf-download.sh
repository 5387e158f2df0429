#!/bin/sh
# Stand-in for hf-download.sh: present so the checkout is complete; gx10-ops stages weights
# itself (upstream PR #408: `hf-download.sh -c` could report success over broken symlinks).
echo "hf-download.sh stand-in: not modelled" >&2
exit 64
