"""Projection of image batches sharded over devices.

The public face of ``nsjax._sharding``:
``import nsjax.sharding`` or ``from nsjax.sharding import ...``.
"""

from nsjax._sharding import *  # noqa: F403
from nsjax._sharding import __all__  # noqa: F401
