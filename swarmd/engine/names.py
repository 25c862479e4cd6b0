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
#: engine v2: a group of agents in one activity, every call journaled
RUN_AGENTS: Final = "swarmd.run_agents"

# Activities of the per-user agent (swarmd.user_agent)
USER_AGENT_POLL: Final = "swarmd.user_agent.poll"  # v1
USER_AGENT_BEGIN_TURN: Final = "swarmd.user_agent.begin_turn"  # v1
USER_AGENT_FINISH_TURN: Final = "swarmd.user_agent.finish_turn"  # v1
USER_AGENT_FIRE_JOB: Final = "swarmd.user_agent.fire_job"  # v1, v2
USER_AGENT_TURN: Final = "swarmd.user_agent.turn"  # v2: a whole turn in one activity
USER_AGENT_FAIL_TURN: Final = "swarmd.user_agent.fail_turn"  # v2, v3: a turn out of retries
#: v3: answer what no live app process answers (the fast path's durable owner)
USER_AGENT_SWEEP: Final = "swarmd.user_agent.sweep"

# External events
#: wakes a user's agent workflow (a message or schedule arrived)
USER_AGENT_WAKE: Final = "wake"
#: a spec with ``approval: true`` waits for it (POST /v1/runs/{id}/events/approval)
APPROVAL: Final = "approval"
#: the run supervisor's poke at a stalled run (a new event makes the worker replay it)
NUDGE: Final = "swarmd.nudge"

#: spec pattern -> workflow registration name
PATTERNS: Final[dict[str, str]] = {
    "scatter_gather": SCATTER_GATHER,
    "supervisor": SUPERVISOR,
    "debate": DEBATE,
    "pipeline": PIPELINE,
}
