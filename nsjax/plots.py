"""Figures (matplotlib Figure objects; no pyplot, no backend change).

The public face of ``nsjax._plots``: ``import nsjax.plots`` or ``from nsjax.plots import ...``.
"""

from nsjax._plots import *  # noqa: F403
from nsjax._plots import __all__  # noqa: F401
