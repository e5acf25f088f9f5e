"""The Kinesis endpoint of a [tls] cluster: HTTPS with the node's certificate, signed calls only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)

KEYS = {"AKIDADMIN": ("admin-secret", "admin"), "AKIDREADER": ("reader-secret", "reader")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(
        tmp_path_factory.mktemp("kinesis-tls"), n=1, tls=True, kinesis=True, kinesis_keys=KEYS
    )
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


def client(cluster: LocalCluster, key: str, secret: str) -> object:
    return boto3.client(
        "kinesis",
        endpoint_url=cluster.kinesis_url("n1"),
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        verify=str(cluster.certs_dir / "ca.pem"),
        config=Config(retries={"max_attempts": 1}),
    )


def test_https_with_the_cluster_ca_and_a_signed_key(cluster: LocalCluster) -> None:
    assert cluster.kinesis_url("n1").startswith("https://")
    admin = client(cluster, "AKIDADMIN", "admin-secret")
    admin.create_stream(StreamName="secure", ShardCount=1)  # type: ignore[attr-defined]
    admin.put_record(StreamName="secure", Data=b"over tls", PartitionKey="k")  # type: ignore[attr-defined]
    shard = admin.list_shards(StreamName="secure")["Shards"][0]["ShardId"]  # type: ignore[attr-defined]
    iterator = admin.get_shard_iterator(  # type: ignore[attr-defined]
        StreamName="secure", ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = admin.get_records(ShardIterator=iterator)["Records"]  # type: ignore[attr-defined]
    assert [r["Data"] for r in records] == [b"over tls"]


def test_a_reader_key_may_read_but_not_change_retention(cluster: LocalCluster) -> None:
    client(cluster, "AKIDADMIN", "admin-secret").create_stream(  # type: ignore[attr-defined]
        StreamName="kept", ShardCount=1
    )
    reader = client(cluster, "AKIDREADER", "reader-secret")
    assert "kept" in reader.list_streams()["StreamNames"]  # type: ignore[attr-defined]
    with pytest.raises(ClientError) as info:
        reader.increase_stream_retention_period(  # type: ignore[attr-defined]
            StreamName="kept", RetentionPeriodHours=48
        )
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"


def test_unsigned_and_plaintext_requests_are_refused(cluster: LocalCluster) -> None:
    address = cluster.kinesis_addresses["n1"]
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Kinesis_20131202.ListStreams",
    }
    ca = Path(cluster.certs_dir / "ca.pem")
    unsigned = requests.post(
        f"https://{address}/", data=b"{}", headers=headers, verify=ca, timeout=10
    )
    assert unsigned.status_code == 400
    assert unsigned.json()["__type"] == "MissingAuthenticationTokenException"
    with pytest.raises(requests.ConnectionError):
        requests.post(f"http://{address}/", data=b"{}", headers=headers, timeout=10)
