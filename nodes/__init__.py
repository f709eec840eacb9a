"""ComfyUI glue of Guidance Lab (V3 schema). Math lives in guidance_core."""
from .cfg_nodes import CFG_NODES

NODES = list(CFG_NODES)
