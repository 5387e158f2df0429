"""The launcher stand-in: `repo/` is copied to the simulated head as the launcher repo,
`images/` builds the test images, `generations/<gen>/` holds each launcher generation's own
scripts (seed, jan26, current), `harness` installs them and inspects what they did.

What each stand-in reproduces, and from which upstream file, is in docs/ (see repo/standin.py).
"""

from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent / "repo"
IMAGES_DIR = Path(__file__).resolve().parent / "images"
GENERATIONS_DIR = Path(__file__).resolve().parent / "generations"
