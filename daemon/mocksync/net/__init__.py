"""mocksync.net: the asyncio adapters that carry change sets between devices.

LAN (issue #5): `lan_transport.LanTransport` is the Agent's transport to peers on the LAN. It
wires `mdns` (announce/discover; names nothing), `peerbook` (pure dial policy: backoff, glare),
`lan_signaling` + `handshake` (signed offer/answer bound to the DTLS fingerprint, members
only, replay-protected), `webrtc` (one aiortc data channel: flow control, compression),
`ice` (candidates only on the bind addresses, no public STUN) and `logsource` (raw wires for
the sans-IO `mocksync.sync` sessions).

Relay: `relay_client`, `relay_transport`.
"""
