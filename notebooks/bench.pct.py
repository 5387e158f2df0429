# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Benchmark report: one model
#
# Runs a closed-loop concurrency sweep (or loads one) and writes into `results/<model>/`:
# `results.json` (the sweep), `table.md` (the blog table) and the figures as PNG and SVG.
# Metric definitions: `docs/metrics.md`. Run it through papermill: `./dev demo`, or
# `inv report --model qwen` for the configured cluster (`--load-only` to re-render).
#
# `model = "demo"`, or a config that does not describe a cluster yet, uses the embedded
# simulated endpoint; everything drawn from it is marked as simulated.

# %%
from bench import report
from cluster.config import load as load_config

# %% tags=["parameters"]
model = "demo"  # a model under `models:` in the config (qwen, nemotron), or "demo"
base_url = "from config"  # "from config": http://<head mgmt>:<api_port>; or e.g. "http://10.0.0.5:8000"
concurrency = None  # e.g. "1,2,4,8"; None: bench.concurrency from config (demo: 1,2,4,8,16,32)
input_len = None  # prompt tokens; None: bench.input_len (demo: 128)
output_len = None  # output tokens per request; None: bench.output_len (demo: 48)
requests = None  # measured requests per point; None: max(8, 4 x C) (demo: max(8, 2 x C))
run = True  # False: only load results/<model>/results.json and render it
rerun = False  # True: measure again the points results.json already has (the demo always does)
results_dir = "results"  # results/<model>/ gets results.json, table.md and the figures
config_file = None  # an Invoke config file, as `inv -f FILE` takes; None: invoke.yaml, ~/.invoke.yaml, INVOKE_*

# %%
settings = load_config(config_file)
target = report.plan(model, base_url=base_url, concurrency=concurrency, input_len=input_len,
                     output_len=output_len, requests=requests, results_dir=results_dir, run=run,
                     settings=settings)
print(target.describe())

# %%
# The provenance card's cluster facts (image IDs, verified versions, launcher, recipe, the head
# container's command line, weights), read over SSH before the first point and after the last.
from cluster.provenance import gather_for  # noqa: E402

on_cluster = not target.simulated and target.label in settings.models and target.base_url == settings.api_url
gather = (lambda: gather_for(settings, target.label)) if on_cluster else None
doc = report.measure(target, rerun=rerun, gather=gather) if run else report.load(target.folder)

# %%
rendered = report.render(doc, target.folder, target.hardware)
report.show(rendered)
