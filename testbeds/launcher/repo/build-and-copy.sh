#!/bin/sh
# Stand-in: the test harness builds and distributes images (simcluster.build_test_image).
echo "build-and-copy.sh: the stand-in launcher cannot build images" >&2
exit 1
