"""mocksync.spaceio: where a device keeps its spaces, and the actions that change them.

Why a package of its own (issue 14): `mocksync.space` decides (identities, the membership log,
keys, invites, quotas) and does no I/O; this is its thin adapter, above it in the layers and
below the network and the daemon that use it:
  store         spaces, keys, invites and relay pins in the home's TinyDB documents
  identityfiles this device's key files and identity metadata
  actions       what the CLI and the daemon do: load, decide (space), persist
  learn         membership entries from a peer or the relay: verified as a whole log, stored
  join          the JoinTransport protocol and the async loop that drives a join over it
"""
