#!/usr/bin/env python3
"""Thin wrapper: the current generation's run-recipe.py is testbeds/launcher/repo/standin.py
(run-recipe) with STANDIN_GENERATION=current."""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
os.environ["STANDIN_GENERATION"] = "current"
os.execv(sys.executable, [sys.executable, os.path.join(here, "standin.py"), "run-recipe", *sys.argv[1:]])
