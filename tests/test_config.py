"""railyard.config: the cluster file's shape, defaults and every validation error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from railyard.config import (
    DEFAULT_CLUSTER_TOML,
    ClusterConfig,
    ConfigError,
    NodeConfig,
    default_config,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent
LOCAL = REPO / "configs" / "local.toml"

NODES_3 = """
[[nodes]]
id = "n1"
address = "127.0.0.1:7001"
[[nodes]]
id = "n2"
address = "127.0.0.1:7002"
[[nodes]]
id = "n3"
address = "127.0.0.1:7003"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str) -> ClusterConfig:
    return load_config(write(tmp_path, text))


def test_local_toml_is_the_issue_file_and_loads() -> None:
    assert LOCAL.read_text() == DEFAULT_CLUSTER_TOML
    cfg = load_config(LOCAL)
    assert cfg.name == "local"
    assert cfg.heartbeat_interval_ms == 100
    assert cfg.election_timeout_ms == 1000
    assert cfg.snapshot_every == 10000
    assert cfg.auto_create_streams is True
    assert cfg.nodes == (
        NodeConfig(
            "n1",
            "127.0.0.1:50051",
            "127.0.0.1:51051",
            "127.0.0.1:52051",
            "127.0.0.1:4567",
            native_address="127.0.0.1:53051",
        ),
        NodeConfig(
            "n2",
            "127.0.0.1:50052",
            "127.0.0.1:51052",
            "127.0.0.1:52052",
            "127.0.0.1:4568",
            native_address="127.0.0.1:53052",
        ),
        NodeConfig(
            "n3",
            "127.0.0.1:50053",
            "127.0.0.1:51053",
            "127.0.0.1:52053",
            "127.0.0.1:4569",
            native_address="127.0.0.1:53053",
        ),
    )
    assert cfg.warnings == ()
    # Relative data_dir is relative to the file, and absolute once loaded:
    # the checkout's data/, where the built-in default keeps it too.
    assert cfg.data_dir == REPO / "data"
    assert cfg.node_data_dir("n2") == REPO / "data" / "n2"
    assert cfg.source == LOCAL


def test_default_config_equals_local_toml_with_data_under_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    default = default_config()
    from_file = load_config(LOCAL)
    assert default.data_dir == tmp_path.resolve() / "data"
    assert default.source is None
    assert dataclasses.replace(default, data_dir=from_file.data_dir, source=LOCAL) == from_file


def test_default_and_configs_local_toml_share_one_data_location(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From the checkout (where `make run` and the README run), one cluster, one ./data."""
    monkeypatch.chdir(REPO)
    assert default_config().data_dir == load_config(Path("configs/local.toml")).data_dir
    assert default_config().node_data_dir("n1") == REPO / "data" / "n1"


def test_make_run_starts_configs_local_toml() -> None:
    run_recipe = (REPO / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "node start -c configs/local.toml" in run_recipe


def test_five_node_example_loads() -> None:
    cfg = load_config(REPO / "configs" / "five.toml")
    assert len(cfg.nodes) == 5
    assert cfg.warnings == ()


def test_defaults_for_missing_cluster_keys(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, NODES_3)
    assert (cfg.name, cfg.heartbeat_interval_ms, cfg.election_timeout_ms) == ("local", 100, 1000)
    assert cfg.data_dir == tmp_path.resolve() / "data"
    assert (cfg.max_record_bytes, cfg.max_batch_records) == (1 << 20, 500)


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, f'[cluster]\ndata_dir = "{tmp_path / "elsewhere"}"\n' + NODES_3)
    assert cfg.data_dir == tmp_path / "elsewhere"


def test_node_lookup_names_the_ids_in_the_file(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, NODES_3)
    assert cfg.node("n2").address == "127.0.0.1:7002"
    with pytest.raises(ConfigError, match=r"cluster\.toml: nodes: .*'n9'.*n1, n2, n3"):
        cfg.node("n9")


def test_peer_address_is_optional_per_node(tmp_path: Path) -> None:
    text = NODES_3.replace('"127.0.0.1:7002"', '"127.0.0.1:7002"\npeer_address = "127.0.0.1:8002"')
    cfg = load_text(tmp_path, text)
    assert [n.peer_address for n in cfg.nodes] == [None, "127.0.0.1:8002", None]


def test_metrics_address_is_optional_per_node(tmp_path: Path) -> None:
    text = NODES_3.replace(
        '"127.0.0.1:7002"', '"127.0.0.1:7002"\nmetrics_address = "127.0.0.1:9002"'
    )
    cfg = load_text(tmp_path, "[cluster]\nmetrics_max_streams = 5\n" + text)
    assert [n.metrics_address for n in cfg.nodes] == [None, "127.0.0.1:9002", None]
    assert cfg.metrics_max_streams == 5
    assert load_text(tmp_path, NODES_3).metrics_max_streams == 100


def test_ipv6_and_hostnames_are_addresses(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        '[[nodes]]\nid = "a"\naddress = "[::1]:7001"\n[[nodes]]\nid = "b"\naddress = "db-2:7002"\n'
        '[[nodes]]\nid = "c"\naddress = "10.0.0.3:7003"\n',
    )
    assert [n.port for n in cfg.nodes] == [7001, 7002, 7003]
    assert cfg.nodes[1].host == "db-2"


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[cluster]\nnmae = 'x'\n" + NODES_3, "cluster.nmae", "unknown key"),
        ("[clusters]\nname = 'x'\n" + NODES_3, "clusters", "unknown key"),
        (NODES_3 + "port = 5\n", "nodes[2].port", "unknown key"),
        ("cluster = 3\n" + NODES_3, "cluster", "table"),
        ("[cluster]\nname = 'bad name'\n" + NODES_3, "cluster.name", "letters"),
        ("[cluster]\nname = 7\n" + NODES_3, "cluster.name", "string"),
        (
            "[cluster]\nheartbeat_interval_ms = '100'\n" + NODES_3,
            "heartbeat_interval_ms",
            "integer",
        ),
        ("[cluster]\nheartbeat_interval_ms = true\n" + NODES_3, "heartbeat_interval_ms", "integer"),
        ("[cluster]\nelection_timeout_ms = 0\n" + NODES_3, "election_timeout_ms", ">= 1"),
        ("[cluster]\nsnapshot_every = -5\n" + NODES_3, "snapshot_every", ">= 1"),
        ("[cluster]\nauto_create_streams = 'yes'\n" + NODES_3, "auto_create_streams", "true or"),
        (
            "[cluster]\nheartbeat_interval_ms = 600\nelection_timeout_ms = 1000\n" + NODES_3,
            "cluster.heartbeat_interval_ms",
            "at most half of election_timeout_ms",
        ),
        ("[cluster]\nname = 'x'\n", "nodes", "at least one"),
        ("nodes = []\n", "nodes", "at least one"),
        ("nodes = [1, 2]\n", "nodes", "array of tables"),
        ('[[nodes]]\naddress = "127.0.0.1:1"\n', "nodes[0].id", "missing"),
        ('[[nodes]]\nid = "a b"\naddress = "127.0.0.1:1"\n', "nodes[0].id", "letters"),
        ('[[nodes]]\nid = "a"\n', "nodes[0].address", "missing"),
        ('[[nodes]]\nid = "a"\naddress = "127.0.0.1"\n', "nodes[0].address", "host:port"),
        ('[[nodes]]\nid = "a"\naddress = "127.0.0.1:0"\n', "nodes[0].address", "1..65535"),
        ('[[nodes]]\nid = "a"\naddress = "127.0.0.1:70000"\n', "nodes[0].address", "host:port"),
        ('[[nodes]]\nid = "a"\naddress = ":80"\n', "nodes[0].address", "host:port"),
        ('[[nodes]]\nid = "a"\naddress = "a:b:80"\n', "nodes[0].address", "host:port"),
        (
            NODES_3.replace('id = "n3"', 'id = "n1"'),
            "nodes[2].id",
            "duplicate node id 'n1'",
        ),
        (
            NODES_3.replace("7003", "7001"),
            "nodes[2].address",
            "duplicate address '127.0.0.1:7001' (also used by node 'n1')",
        ),
        (
            NODES_3.replace('"127.0.0.1:7002"', '"127.0.0.1:7002"\npeer_address = "127.0.0.1"'),
            "nodes[1].peer_address",
            "host:port",
        ),
        (
            NODES_3.replace('"127.0.0.1:7002"', '"127.0.0.1:7002"\npeer_address = 8002'),
            "nodes[1].peer_address",
            "string",
        ),
        (
            NODES_3.replace(
                '"127.0.0.1:7002"', '"127.0.0.1:7002"\npeer_address = "127.0.0.1:7002"'
            ),
            "nodes[1].peer_address",
            "duplicate address '127.0.0.1:7002' (also used by node 'n2')",
        ),
        (
            NODES_3.replace(
                '"127.0.0.1:7002"', '"127.0.0.1:7002"\npeer_address = "127.0.0.1:7003"'
            ),
            "nodes[2].address",
            "each address, peer_address, metrics_address, kinesis_address and "
            "native_address needs its own "
            "host:port",
        ),
        (
            NODES_3.replace(
                '"127.0.0.1:7001"', '"127.0.0.1:7001"\npeer_address = "127.0.0.1:8001"'
            ).replace('"127.0.0.1:7002"', '"127.0.0.1:7002"\npeer_address = "127.0.0.1:8001"'),
            "nodes[1].peer_address",
            "duplicate address '127.0.0.1:8001' (also used by node 'n1')",
        ),
        (NODES_3 + "peer_port = 8003\n", "nodes[2].peer_port", "unknown key"),
        (
            NODES_3.replace('"127.0.0.1:7002"', '"127.0.0.1:7002"\nmetrics_address = "localhost"'),
            "nodes[1].metrics_address",
            "host:port",
        ),
        (
            NODES_3.replace(
                '"127.0.0.1:7002"', '"127.0.0.1:7002"\nmetrics_address = "127.0.0.1:7001"'
            ),
            "nodes[1].metrics_address",
            "duplicate address '127.0.0.1:7001' (also used by node 'n1')",
        ),
        ("[cluster]\nmetrics_max_streams = -1\n" + NODES_3, "metrics_max_streams", ">= 0"),
        ("[cluster\nname = 1", "not valid TOML", ""),
    ],
)
def test_validation_errors_name_file_key_and_expectation(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert message.startswith(str(tmp_path.resolve() / "cluster.toml") + ": ")
    assert key in message
    assert expected in message


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_config(tmp_path / "nope.toml")


def test_even_node_count_is_a_warning_not_an_error(tmp_path: Path) -> None:
    text = NODES_3 + '[[nodes]]\nid = "n4"\naddress = "127.0.0.1:7004"\n'
    cfg = load_text(tmp_path, text)
    assert len(cfg.nodes) == 4
    assert len(cfg.warnings) == 1
    assert "4 nodes" in cfg.warnings[0]
    assert "odd number" in cfg.warnings[0]


def test_heartbeat_exactly_half_the_election_timeout_is_accepted(tmp_path: Path) -> None:
    text = "[cluster]\nheartbeat_interval_ms = 500\nelection_timeout_ms = 1000\n" + NODES_3
    assert load_text(tmp_path, text).heartbeat_interval_ms == 500


TLS = """
[tls]
ca_file = "certs/ca.pem"
cert_file = "certs/{id}.pem"
key_file = "certs/{id}.key"
client_cert_file = "certs/client.pem"
client_key_file = "certs/client.key"
"""


def test_tls_paths_are_relative_to_the_file_and_id_is_substituted(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, NODES_3 + TLS)
    assert cfg.tls is not None
    base = tmp_path.resolve()
    assert cfg.tls.ca_file == base / "certs" / "ca.pem"
    assert cfg.tls.node_cert_file("n2") == base / "certs" / "n2.pem"
    assert cfg.tls.node_key_file("n2") == base / "certs" / "n2.key"
    assert cfg.tls.client_cert_file == base / "certs" / "client.pem"
    assert cfg.tls.client_key_file == base / "certs" / "client.key"


def test_no_tls_table_means_plaintext_and_insecure_defaults_to_false(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, NODES_3)
    assert cfg.tls is None
    assert cfg.insecure is False
    assert load_text(tmp_path, "[cluster]\ninsecure = true\n" + NODES_3).insecure is True


def test_client_keys_are_optional(tmp_path: Path) -> None:
    text = TLS.replace('client_cert_file = "certs/client.pem"\n', "").replace(
        'client_key_file = "certs/client.key"\n', ""
    )
    tls = load_text(tmp_path, NODES_3 + text).tls
    assert tls is not None
    assert tls.client_cert_file is None
    assert tls.client_key_file is None


@pytest.mark.parametrize(
    ("tls", "key", "expected"),
    [
        (TLS + "verify = false\n", "tls.verify", "unknown key"),
        (TLS.replace('ca_file = "certs/ca.pem"\n', ""), "tls.ca_file", "missing"),
        (TLS.replace('"certs/{id}.pem"', '"certs/node.pem"'), "tls.cert_file", "{id}"),
        (TLS.replace('"certs/{id}.key"', '"certs/{name}.key"'), "tls.key_file", "placeholder"),
        (TLS.replace('"certs/ca.pem"', '""'), "tls.ca_file", "non-empty path"),
        (TLS.replace('"certs/ca.pem"', "5"), "tls.ca_file", "string"),
        (
            TLS.replace('client_key_file = "certs/client.key"\n', ""),
            "tls.client_key_file",
            "together",
        ),
        ("tls = 1\n", "tls", "[tls] table"),
    ],
)
def test_tls_errors_name_the_key(tmp_path: Path, tls: str, key: str, expected: str) -> None:
    text = tls + NODES_3 if tls.startswith("tls =") else NODES_3 + tls
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert f"{key}: " in str(info.value)
    assert expected in str(info.value)


def test_insecure_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.insecure: expected true or false"):
        load_text(tmp_path, "[cluster]\ninsecure = 'yes'\n" + NODES_3)


def test_exposed_addresses_are_the_non_loopback_ones(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        '[[nodes]]\nid = "a"\naddress = "127.0.0.1:7001"\npeer_address = "10.0.0.1:8001"\n'
        '[[nodes]]\nid = "b"\naddress = "localhost:7002"\npeer_address = "[::1]:8002"\n'
        '[[nodes]]\nid = "c"\naddress = "db-3:7003"\n',
    )
    assert cfg.exposed_addresses("a") == ["10.0.0.1:8001"]
    assert cfg.exposed_addresses("b") == []
    assert cfg.exposed_addresses("c") == ["db-3:7003"]


KINESIS_NODE = """
[[nodes]]
id = "n1"
address = "127.0.0.1:7001"
kinesis_address = "127.0.0.1:7101"
"""


def test_kinesis_address_and_credentials_load(tmp_path: Path) -> None:
    cfg = load_text(
        tmp_path,
        KINESIS_NODE
        + """
[kinesis.credentials]
AKIDREAD = { secret_access_key = "r", role = "reader" }
"AKID.ADMIN" = { secret_access_key = "a", role = "admin" }
""",
    )
    assert cfg.nodes[0].kinesis_address == "127.0.0.1:7101"
    assert [(k.access_key_id, k.secret_access_key, k.role) for k in cfg.kinesis_credentials] == [
        ("AKIDREAD", "r", "reader"),
        ("AKID.ADMIN", "a", "admin"),
    ]


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        (
            '[kinesis.credentials]\nK = { secret_access_key = "s", role = "root" }',
            "K.role",
            "one of reader, writer, admin",
        ),
        (
            '[kinesis.credentials]\nK = { secret_access_key = "", role = "reader" }',
            "K.secret_access_key",
            "non-empty",
        ),
        ('[kinesis.credentials]\nK = "secret"', "kinesis.credentials.K", "secret_access_key"),
        ("[kinesis]\nsigv4 = true", "kinesis.sigv4", "unknown key"),
    ],
)
def test_bad_kinesis_settings_name_the_key(
    tmp_path: Path, extra: str, key: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_text(tmp_path, KINESIS_NODE + extra)
    assert key in str(err.value) and expected in str(err.value)


def test_a_kinesis_address_counts_as_exposed(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, KINESIS_NODE.replace("127.0.0.1:7101", "10.0.0.1:7101"))
    assert cfg.exposed_addresses("n1") == ["10.0.0.1:7101"]


def test_with_tls_a_kinesis_endpoint_needs_credentials(tmp_path: Path) -> None:
    # Unsigned requests would otherwise get around the certificates' roles.
    with pytest.raises(
        ConfigError, match=r"kinesis\.credentials: expected at least one access key"
    ):
        load_text(tmp_path, KINESIS_NODE + TLS)
    keyed = (
        KINESIS_NODE
        + TLS
        + '[kinesis.credentials]\nK = { secret_access_key = "s", role = "admin" }\n'
    )
    assert load_text(tmp_path, keyed).kinesis_credentials[0].role == "admin"
