"""The gate that bounds registry lookups in flight: the limit holds, slots are never lost, FIFO."""

from __future__ import annotations

import asyncio

import pytest

from scanner.core.net import Gate


def test_no_more_than_the_limit_are_inside_at_once_and_everyone_gets_through():
    async def main() -> tuple[int, int]:
        gate = Gate(3)
        inside = peak = done = 0

        async def lookup() -> None:
            nonlocal inside, peak, done
            async with gate:
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.001)
                inside -= 1
            done += 1

        await asyncio.gather(*(lookup() for _ in range(40)))
        return peak, done

    assert asyncio.run(main()) == (3, 40)


def test_waiters_are_let_in_in_the_order_they_arrived():
    async def main() -> list[int]:
        gate = Gate(1)
        assert gate.try_enter()
        order: list[int] = []

        async def waiter(i: int) -> None:
            await gate.enter()
            order.append(i)
            gate.leave()

        tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
        await asyncio.sleep(0)  # all five are queued now
        gate.leave()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("cancel_after_handover", [False, True])
def test_a_cancelled_waiter_never_takes_a_slot_with_it(cancel_after_handover):
    async def main() -> bool:
        gate = Gate(1)
        assert gate.try_enter()
        waiting = asyncio.create_task(gate.enter())
        await asyncio.sleep(0)
        if cancel_after_handover:
            gate.leave()  # the slot goes to the waiter, which is cancelled before it runs
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        if not cancel_after_handover:
            gate.leave()
        return gate.try_enter()  # the one slot is free again

    assert asyncio.run(main()) is True


def test_a_gate_without_slots_is_refused():
    with pytest.raises(ValueError, match="at least one slot"):
        Gate(0)
