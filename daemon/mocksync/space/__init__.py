"""mocksync.space: who may take part in a space, and with which keys.

Pure decision modules (values in, values out; `now` is passed in):
  identity    device keys (Ed25519 + X25519) and typeable, typo-catching device ids
  membership  the signed membership log (a DAG of admin-signed entries) and the state it proves,
              including `accepts_change` for removed devices (docs/design/security.md §1, §2)
  keys        content keys per generation, payload AEAD, sealed boxes, mDNS space tags (2, 3, 5)
  invite      one-time expiring invite tokens and the join handshake state machines (6)
  quotas      plan limits and their sentences
  relayroutes which relay connection carries which space, relay key pins per address
No file or socket (the import-linter contract `pure-core` checks it; randomness comes from
`os.urandom`). Reading and writing the home (spaces, keys, invites, identity files), the
actions that load, decide and persist, taking in entries and the join loop are its thin
adapter, `mocksync.spaceio`.
"""
