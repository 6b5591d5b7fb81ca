"""Flax NNX versions of the paper's models: ``nsjax.nnx.FCNN`` and ``nsjax.nnx.CNN``.

Same fields, function and parameter paths as the Linen ``nsjax.FCNN`` / ``nsjax.CNN``,
built eagerly with ``rngs=nnx.Rngs(seed)``::

    model = nsjax.nnx.FCNN((784, 32, 16, 10), rngs=nnx.Rngs(0))
    ns = nsjax.null_space_of(model)      # dim 752
"""

from nsjax._models import NNXCNN as CNN
from nsjax._models import NNXFCNN as FCNN

__all__ = ["FCNN", "CNN"]
