"""The image tasks' error: one type, since every image failure is reported the same way."""

from __future__ import annotations

from ..errors import ClusterError


class ImagesError(ClusterError):
    """An image task cannot go on; the message names the node, the image and what to do."""
