"""ComfyUI glue of Guidance Lab (V3 schema). Math lives in guidance_core."""
from .cfg_nodes import CFG_NODES
from .classifier_nodes import CLASSIFIER_NODES
from .clip_nodes import CLIP_NODES
from .toy_nodes import TOY_NODES
from .training_nodes import TRAINING_NODES

NODES = [*CFG_NODES, *CLASSIFIER_NODES, *CLIP_NODES, *TRAINING_NODES, *TOY_NODES]

# HTTP routes of the frontend extension (web/); does nothing without a running ComfyUI server.
from . import routes as _routes  # noqa: E402

_routes.register_with_server()
