"""mocksync.relay: the relay server and the pieces its clients share.

Pure (values in, values out): `protocol` (message table, limits, strict codec), `envelope`
(env tags, sealing change sets for the relay), `auth` (signed challenge, signed signals),
`policy` (admission, quotas, refusal codes, message rate). I/O: `storage` (RelayStorage and
its SQLite backend) and `server` (aiohttp WebSocket server). The daemon side lives in
`mocksync.net.relay_client` and `mocksync.net.relay_transport`; importing this package does
not import aiohttp.
"""
