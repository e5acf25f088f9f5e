"""What clients call: the Streams and Cluster gRPC services.

`streams_service` and `cluster_service` serve the RPCs; `context` holds what
they share about the node (`NodeContext`) and the hop to the leader
(`Forwarder`); `commands` turns requests into log commands; `status_codes`
maps every failure to its gRPC status, in one place.
"""
