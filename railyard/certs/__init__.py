"""A cluster's certificates: issuing them (`railyard cert`) and reading who they name.

Used by the CLI to write certificates and by nodes to tell a peer from a
client and a client's role. Imports only the standard library and
`cryptography`; knows nothing of the network or the cluster file.
"""

from railyard.certs.authority import (
    DEFAULT_CA_DAYS,
    DEFAULT_CERT_DAYS,
    Authority,
    Issued,
    issue_client,
    issue_node,
    load_authority,
    new_authority,
    refuse_existing,
    save,
    save_authority,
)
from railyard.certs.identity import (
    ADMIN,
    NODE,
    READER,
    ROLES,
    WRITER,
    CertError,
    Identity,
    days_left,
    describe_peercert,
    identity_of_pem,
    node_id_of_peercert,
)

__all__ = [
    "ADMIN",
    "DEFAULT_CA_DAYS",
    "DEFAULT_CERT_DAYS",
    "NODE",
    "READER",
    "ROLES",
    "WRITER",
    "Authority",
    "CertError",
    "Identity",
    "Issued",
    "days_left",
    "describe_peercert",
    "identity_of_pem",
    "issue_client",
    "issue_node",
    "load_authority",
    "new_authority",
    "node_id_of_peercert",
    "refuse_existing",
    "save",
    "save_authority",
]
