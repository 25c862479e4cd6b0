"""Mid-step checkpoints for long activities.

An activity that does several expensive things (several LLM sub-calls, say)
saves its progress after each one, keyed by run and step. If the process dies
and the engine retries the activity, the retry loads the checkpoint and
resumes after the last completed sub-call instead of paying for all of them
again. Completion of the whole step is still recorded by the workflow engine;
the checkpoint only covers the inside of one step. Keys expire (TTL), are
recorded in the run's key index before the first save (purging the run deletes
them), and the step key must be deterministic (given by the workflow), never a
random id.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

from swarmd.engine.dapr import DaprClient
from swarmd.engine.runkeys import RunKeys

P = TypeVar("P", bound=BaseModel)


class Checkpoint(Generic[P]):
    def __init__(
        self, state: DaprClient, run_id: str, step: str, model: type[P], ttl_s: int = 7 * 24 * 3600
    ) -> None:
        self.state = state
        self.run_id = run_id
        self.key = f"checkpoint|{run_id}|{step}"
        self.model = model
        self.ttl_s = ttl_s
        self._indexed = False

    async def load(self) -> P | None:
        raw = await self.state.get_value(self.key)
        return None if raw is None else self.model.model_validate(raw)

    async def save(self, progress: P) -> None:
        if not self._indexed:
            await RunKeys(self.state, self.ttl_s).add(self.run_id, [self.key])
            self._indexed = True
        await self.state.put(self.key, progress.model_dump(mode="json"), self.ttl_s)
