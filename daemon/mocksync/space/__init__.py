"""mocksync.space: who may take part in a space, and with which keys.

Pure decision modules (values in, values out; `now` is passed in):
  identity    device keys (Ed25519 + X25519) and typeable, typo-catching device ids
              (plus thin load/create of the key files)
  membership  the signed membership log (a DAG of admin-signed entries) and the state it proves,
              including `accepts_change` for removed devices (docs/design/security.md §1, §2)
  keys        content keys per generation, payload AEAD, sealed boxes, mDNS space tags (2, 3, 5)
  invite      one-time expiring invite tokens and the join handshake state machines (6)
  quotas      plan limits and their sentences
  join        the JoinTransport protocol and the async loop that drives a join over it
Thin I/O: `store` (spaces, keys and invites in the home's TinyDB documents) and `actions`
(what the CLI and daemon do: load, decide, persist).
"""
