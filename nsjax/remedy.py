"""Closing the null space: attack spaces of models and their comparison.

The public face of ``nsjax._remedy``: ``import nsjax.remedy`` or ``from nsjax.remedy import ...``.
"""

from nsjax._remedy import *  # noqa: F403
from nsjax._remedy import __all__  # noqa: F401
