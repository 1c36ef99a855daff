"""The model zoo: every network of the paper's Table 2, registered by name.

Importing this package registers them, in the paper's row order, then the networks
whose trained weights come from elsewhere (``mobilefacenet_tf``).
"""

from mfn_deploy.models import mobilenet_v1, shufflenet, mobilenet_v2, mobilefacenet  # noqa: F401, I001
from mfn_deploy.models import mobilefacenet_tf  # noqa: F401
from mfn_deploy.models.registry import (
    FaceModel,
    InputSpec,
    ModelSpec,
    check_input_size,
    create,
    get_spec,
    names,
    register,
)

__all__ = [
    "FaceModel",
    "InputSpec",
    "ModelSpec",
    "check_input_size",
    "create",
    "get_spec",
    "names",
    "register",
]
