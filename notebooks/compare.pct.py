# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Benchmark comparison: two or more models
#
# Loads `results/<name>/results.json` for each name and writes into `out_dir` one comparison
# table (`table.md`) and the bench figures with every model overlaid, as PNG and SVG. Nothing
# is measured here: run each model's sweep first (`inv report --model NAME`).

# %%
from bench import report
from cluster.config import load as load_config

# %% tags=["parameters"]
models = "qwen,nemotron"  # result folders under results_dir, comma-separated, in legend order
results_dir = "results"
out_dir = "results/compare"  # gets table.md and the figures
config_file = None  # an Invoke config file, as `inv -f FILE` takes (for the hardware label of measured runs)

# %%
runs = report.load_runs(models, results_dir, settings=load_config(config_file))
rendered = report.render_runs(runs, out_dir)
report.show(rendered)

# %% [markdown]
# Ratios of the second run to the first, per concurrency, with 95 % intervals (needs both runs
# swept with `--repeats 2` or more); written to `out_dir/ratios.md`.

# %%
from bench import compare  # noqa: E402

print(compare.write_ratios(models, results_dir, out_dir))
