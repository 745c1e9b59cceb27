"""TEMPORARY stub (not committed): replaced by the sweep branch."""

from __future__ import annotations

import asyncio


class Sweeper:
    def __init__(
        self,
        database_url: str,
        app_name: str,
        executor_id: str,
        *,
        interval: float = 2.0,
        dead_after: float = 10.0,
    ) -> None:
        self.interval = interval

    async def beat(self) -> None:
        return None

    async def sweep_once(self) -> list[str]:
        return []

    async def recover(self, workflow_id: str) -> bool:
        return False

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None
