"""Launching one model on the cluster through the launcher, and watching it until it serves.

Single tenancy: before a model starts, every serving container on every node is removed (the
seed's `docker rm -f`), whichever model it was. The launch is refused, before anything changes,
when the image is not on every node with one ID or the weights are not staged; the message
carries the command that fixes it. Split by concern: `preflight` (what is checked first),
`current` (what serves, and stopping it), `launcher` (the launch itself), `watch` (the wait for
/health and the failure reports), `errors` (one type per way a launch fails).
"""
