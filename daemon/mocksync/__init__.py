"""mocksync: local-first sync for Mockoon environments.

The decision code (model, changes, space, sync) is pure: values in, values out, no sockets,
files or clocks. The I/O layers (store, net, relay, agent, cli) are thin adapters around it.
"""

__version__ = "0.1.0"

#: Version of the wire protocol spoken between daemons and with the relay. 2: the relay's
#: challenge carries its key and proof, and the device's answer is bound to them (issue 12).
#: 3: sync sessions exchange membership logs (hello `mh`, `mheads`, `mlog`; issue 16).
#: Bumped for every change of format from the first release on; until then 3 is the working
#: version and grows in place (docs/design/relay.md, "When the protocol version changes").
PROTOCOL_VERSION = 3
#: Version of the register model (bumped by a `migrate` entry in a space's membership log).
MODEL_VERSION = 1
#: Highest Mockoon `lastMigration` this build understands by default.
MOCKOON_MAX_MIGRATION = 33
