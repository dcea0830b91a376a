"""The test suite's one harness for devices, agents, daemons and relays (issue 14), and the
other helpers several test modules share.

Why a package: test modules used to import helpers from each other (`from test_relay_sync
import Lab`), so changing one test file could break five others, and four harnesses (in
process, daemon subprocesses, namespaces, journeys) each started, waited for and stopped
devices their own way. Test modules import only from here (and from the plain modules next to
them: envfactory, editor_standin, attack_tools, pgserver); shared fixtures live in
tests/conftest.py. No test module imports another.

The pieces, lowest first (each imports only those above it):
- `procs`: child processes (spawn in its own session, SIGTERM then SIGKILL, reaped at exit),
  the `mocksync` command, log tails, short temp homes. No `mocksync` import.
- `ports`: a loopback port a restarted server keeps. `polling`: the one bounded wait
  (`wait_until` async, `wait_sync` blocking). `files`: editor saves and document accessors.
- `devices`: a device's home, folder and identity; spaces made and paired with library code.
- `agents`: in-process agents (LocalBus, LAN on 127.0.0.1), `two_devices`, `settle`.
- `relaylab`: in-process agents with a real relay on 127.0.0.1 (`Lab`, the `lab` fixture).
- `daemons`: real `mocksync daemon` subprocesses (`DaemonProcess`) and the CLI.
- `netns`: hosts in network namespaces (198.18.0.0/24) running `DaemonProcess`es.
- `uipage`: the local web page over a stand-in agent and control API.
- tests/journeys/harness.py: the black-box variant (CLI only) built on `procs`, `ports`,
  `polling` and `files`.
- Others: `syncsupport` (in-memory logs and links for the sans-IO sync tests), `mergekit`,
  `mallory`, `localuser`, `fakeagent`.
"""
