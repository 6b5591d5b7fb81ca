"""Training with optax: the paper's recipes, train / evaluate / predict.

The public face of ``nsjax._train``:
``import nsjax.training`` or ``from nsjax.training import ...``.
"""

from nsjax._train import *  # noqa: F403
from nsjax._train import __all__  # noqa: F401
