"""Cluster lifecycle for a multi-node GB10 vLLM cluster: config, SSH layer, and the task logic."""
