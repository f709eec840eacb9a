"""ComfyUI glue of Guidance Lab (V3 schema). Math lives in guidance_core."""

import logging

from .cfg_nodes import CFG_NODES
from .classifier_nodes import CLASSIFIER_NODES
from .clip_nodes import CLIP_NODES
from .distilled import DISTILLED_NODES
from .search_aliases import with_search_aliases
from .toy_nodes import TOY_NODES
from .training_nodes import TRAINING_NODES

# search aliases where the running ComfyUI's schema has them (nodes/search_aliases.py)
NODES = with_search_aliases([*CFG_NODES, *DISTILLED_NODES, *CLASSIFIER_NODES, *CLIP_NODES, *TRAINING_NODES, *TOY_NODES])


def loadable(nodes) -> list:
    """The nodes whose schema builds. ComfyUI's loader stops at the first node whose schema raises and
    drops every node after it; such a node is left out here instead, with the reason logged."""
    out = []
    for node in nodes:
        try:
            node.GET_SCHEMA()
        except Exception as e:  # any error of one node's schema must not cost the pack its other nodes
            logging.warning(
                "Guidance Lab: node %s is left out, its schema raises %s: %s",
                node.__name__,
                type(e).__name__,
                e,
                exc_info=True,
            )
            continue
        out.append(node)
    return out


# HTTP routes of the frontend extension (web/); does nothing without a running ComfyUI server.
from . import routes as _routes  # noqa: E402

_routes.register_with_server()
