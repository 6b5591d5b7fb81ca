"""Dataset readers: MNIST, Fashion-MNIST, EMNIST Balanced, CIFAR-10 (files, tfds, embedded).

The public face of ``nsjax._data``: ``import nsjax.data`` or ``from nsjax.data import ...``.
"""

from nsjax._data import *  # noqa: F403
from nsjax._data import __all__  # noqa: F401
