#!/usr/bin/env python3
"""Thin wrapper: the seed generation's run-recipe.py is testbeds/launcher/repo/standin.py
(run-recipe) with STANDIN_GENERATION=seed."""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
os.environ["STANDIN_GENERATION"] = "seed"
os.execv(sys.executable, [sys.executable, os.path.join(here, "standin.py"), "run-recipe", *sys.argv[1:]])
