"""Registration names of every workflow and activity.

These names are a wire contract: they are written into workflow history, so a
run started by one deploy must find the same names in the next. Never rename
one; add a new name (and keep the old registered) instead.
"""

from typing import Final

# Workflows
SCATTER_GATHER: Final = "swarmd.scatter_gather"
SUPERVISOR: Final = "swarmd.supervisor"
DEBATE: Final = "swarmd.debate"
PIPELINE: Final = "swarmd.pipeline"
AGENT_LOOP: Final = "swarmd.agent_loop"
USER_AGENT: Final = "swarmd.user_agent"

# Activities
CALL_LLM: Final = "swarmd.call_llm"
CALL_TOOL: Final = "swarmd.call_tool"
REDUCE_CHUNKS: Final = "swarmd.reduce_chunks"

#: spec pattern -> workflow registration name
PATTERNS: Final[dict[str, str]] = {
    "scatter_gather": SCATTER_GATHER,
    "supervisor": SUPERVISOR,
    "debate": DEBATE,
    "pipeline": PIPELINE,
}
