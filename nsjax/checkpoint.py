"""Checkpoints: a model's parameters with a JSON descriptor that rebuilds it.

The public face of ``nsjax._checkpoint``:
``import nsjax.checkpoint`` or ``from nsjax.checkpoint import ...``.
"""

from nsjax._checkpoint import *  # noqa: F403
from nsjax._checkpoint import __all__  # noqa: F401
