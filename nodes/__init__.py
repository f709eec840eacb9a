"""ComfyUI glue of Guidance Lab (V3 schema). Math lives in guidance_core."""
from .cfg_nodes import CFG_NODES
from .classifier_nodes import CLASSIFIER_NODES
from .training_nodes import TRAINING_NODES

NODES = [*CFG_NODES, *CLASSIFIER_NODES, *TRAINING_NODES]
