"""The launcher stand-in: `repo/` is copied to the simulated head as the launcher repo,
`images/` builds the test images, `harness` installs both and inspects what they did.

What each stand-in reproduces, and from which upstream file, is in docs/ (see repo/standin.py).
"""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent / "repo"
IMAGES_DIR = Path(__file__).resolve().parent / "images"
