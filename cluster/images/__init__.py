"""Container images: which to act on, verified against the pinned versions, rebuilt on the head,
copied between nodes, pruned safely.

The seed's rule is that nothing leaves the head unverified: `build` never runs the launcher's
copy step, `verify` writes a record per image ID on the head, and `distribute` reads that record
before a byte moves. Split by concern: `select` (which images, lineage, what each node holds),
`verify` (version judges, probes, records), `build` (wheels, rebuild), `distribute` (head ->
workers stream), `backup` (control <-> node streams), `prune` (freeing space).
"""
