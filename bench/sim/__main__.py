"""`python -m bench.sim`: serve the simulated endpoint until interrupted."""

from bench.sim.runner import main

raise SystemExit(main())
