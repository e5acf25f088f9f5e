"""How nodes reach each other: Raft messages out and in.

`links` (one `PeerLink` per peer, the `Transport` the driver sends through),
`tcp` (the plain-TCP peer wire), `proxy` (HTTP CONNECT, chosen as gRPC
chooses it), `inbound` (the Raft gRPC service and the checks every incoming
envelope passes) and `codec` (Raft messages to protobuf and back).
"""
