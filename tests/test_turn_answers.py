"""The per-process answers of user-agent turns (swarmd.agents.turn.Answers)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from swarmd.agents.turn import Answers


def test_two_executions_of_one_turn_at_once_make_the_call_once() -> None:
    answers, made = Answers(), []

    async def make() -> dict[str, Any]:
        made.append(1)
        await asyncio.sleep(0.05)
        return {"content": "the answer"}

    async def both() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                answers.once("turn|1", "a/m1/1/0", "fp", make),
                answers.once("turn|1", "a/m1/1/0", "fp", make),
            )
        )

    assert asyncio.run(both()) == [{"content": "the answer"}] * 2
    assert len(made) == 1


def test_a_failed_call_is_made_again_by_the_one_waiting() -> None:
    answers, made = Answers(), []

    async def fails() -> dict[str, Any]:
        made.append("first")
        await asyncio.sleep(0.05)
        raise ConnectionError("gateway gone")

    async def works() -> dict[str, Any]:
        made.append("second")
        return {"content": "ok"}

    async def both() -> list[Any]:
        return list(
            await asyncio.gather(
                answers.once("turn|1", "a/m1/1/0", "fp", fails),
                answers.once("turn|1", "a/m1/1/0", "fp", works),
                return_exceptions=True,
            )
        )

    first, second = asyncio.run(both())
    assert isinstance(first, ConnectionError) and second == {"content": "ok"}
    assert made == ["first", "second"]


def test_an_answer_serves_only_the_same_request_and_goes_with_the_stored_turn() -> None:
    answers = Answers()
    answers.put("turn|1", "a/m1/1/0", "fp", {"content": "x"})
    assert answers.get("turn|1", "a/m1/1/0", "other") is None
    assert answers.get("turn|1", "a/m1/1/0", "fp") == {"content": "x"}
    answers.forget("turn|1")
    assert answers.get("turn|1", "a/m1/1/0", "fp") is None


@pytest.mark.parametrize("n", [3])
def test_many_waiters_share_one_answer(n: int) -> None:
    answers, made = Answers(), []

    async def make() -> dict[str, Any]:
        made.append(1)
        await asyncio.sleep(0.02)
        return {"n": len(made)}

    async def many() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(answers.once("t", "k", "fp", make) for _ in range(n))))

    assert asyncio.run(many()) == [{"n": 1}] * n
