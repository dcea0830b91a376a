"""The linked files' poll commits in a store turn, never beside a job on the store worker.

Why: the poll (`LinkedFiles.poll`, every `LINKED_POLL_S` on the event loop) commits the
fixtures and TLS files that changed on disk. Run outside a turn, it committed on the loop
while the store worker ran a job on the same environment (a teammate's change set being
applied, a write of the file): two threads changing one State and one log at once, the
pattern that took one editor save in twice (tests/test_agent_take_once.py). The step is
checked here without sleeps: a job is held on the worker; the poll step must wait for it
and commit only after it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from mocksync.agent.bus import LocalBus

from helpers.agents import make_agent, running, settle
from helpers.devices import make_device, team_space
from helpers.files import copy_example, read_doc
from helpers.polling import wait_until

#: Loop iterations given to a poll step that must be waiting (each `sleep(0)` only yields).
YIELDS = 20
#: The poll's own period in this test: never, so only the test's poll steps run.
NEVER_S = 3600.0


async def test_the_poll_waits_for_the_store_worker_then_commits_once(tmp_path: Path) -> None:
    dev_a, dev_b = make_device(tmp_path, "a"), make_device(tmp_path, "b")
    team_space(dev_a, dev_b)
    bus = LocalBus()
    a, b = make_agent(dev_a, bus), make_agent(dev_b, bus)
    a.linked.poll_s = b.linked.poll_s = NEVER_S
    async with running(a, b):
        src = copy_example("payments-callbacks.json", dev_a.folder, "payments.json")
        rels = sorted({r["filePath"] for route in read_doc(src)["routes"]
                       for r in route["responses"] if r.get("bodyType") == "FILE"})
        assert rels, "the example links no FILE body"
        fixture = dev_a.folder / rels[0]
        for rel in rels:
            (dev_a.folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (dev_a.folder / rel).write_text(json.dumps({"rel": rel}), encoding="utf-8")
        async with a.store_turn():
            env = a.share(str(src), space="team")["uuid"]
        await wait_until(lambda: env in b.envs and (dev_b.folder / rels[0]).exists(),
                         "B to have the environment and its fixture")
        await settle(a, b)
        await a.linked.poll()  # (every linked file's signature seen once)
        await settle(a, b)
        worker = a.worker
        assert worker is not None
        before = a.store.version_vector(env).get(a.device, 0)

        in_job, go_on = threading.Event(), threading.Event()

        def held_job() -> None:  # stands for an ingest or a write of this environment
            in_job.set()
            assert go_on.wait(30), "the test never let the job go on"

        try:
            assert a.spawn_on_worker(held_job)
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, in_job.wait, 30), "the job never ran"
            fixture.write_text("changed while the worker was busy", encoding="utf-8")
            step = asyncio.create_task(a.linked.poll())
            for _ in range(YIELDS):
                await asyncio.sleep(0)
            assert not step.done()  # it waits for the job on the worker
            assert a.store.version_vector(env).get(a.device, 0) == before
            go_on.set()
            await step
            await worker.drain()
        finally:
            go_on.set()
        assert a.store.version_vector(env)[a.device] == before + 1
        await wait_until(lambda: (dev_b.folder / rels[0]).read_text(encoding="utf-8")
                         == "changed while the worker was busy", "the fixture to reach B")
