"""Mid-step checkpoints for long activities.

An activity that does several expensive things (several LLM sub-calls, say)
saves its progress after each one, keyed by run and step. If the process dies
and the engine retries the activity, the retry loads the checkpoint and
resumes after the last completed sub-call instead of paying for all of them
again. Completion of the whole step is still recorded by the workflow engine;
the checkpoint only covers the inside of one step. Keys expire (TTL), and the
step key must be deterministic (given by the workflow), never a random id.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

from swarmd.engine.state import StateStore

P = TypeVar("P", bound=BaseModel)


class Checkpoint(Generic[P]):
    def __init__(
        self, state: StateStore, run_id: str, step: str, model: type[P], ttl_s: int = 7 * 24 * 3600
    ) -> None:
        self.state = state
        self.key = f"checkpoint|{run_id}|{step}"
        self.model = model
        self.ttl_s = ttl_s

    async def load(self) -> P | None:
        raw = await self.state.get(self.key)
        return None if raw is None else self.model.model_validate(raw)

    async def save(self, progress: P) -> None:
        await self.state.put(self.key, progress.model_dump(mode="json"), self.ttl_s)

    async def clear(self) -> None:
        await self.state.delete(self.key)
