"""Registration names of every workflow and activity.

These names are a wire contract: they are written into workflow history, so a
run started by one deploy must find the same names in the next. Never rename
one; add a new name (and keep the old registered) instead.
"""

from typing import Final

# Workflows
SCATTER_GATHER: Final = "swarmd.scatter_gather"
AGENT_LOOP: Final = "swarmd.agent_loop"

# Activities
CALL_LLM: Final = "swarmd.call_llm"
CALL_TOOL: Final = "swarmd.call_tool"

#: swarm name in the API -> workflow registration name
SWARMS: Final[dict[str, str]] = {
    "scatter_gather": SCATTER_GATHER,
}
