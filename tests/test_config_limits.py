"""railyard.config: the [limits] table, its defaults and every validation error."""

from __future__ import annotations

from pathlib import Path

import pytest

from railyard.config import (
    DEFAULT_MAX_CLIENT_STREAMS,
    DEFAULT_MAX_GET_RECORDS_BYTES,
    DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
    DEFAULT_MAX_NATIVE_CONNECTIONS,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_WATCH_SUBSCRIBERS,
    MAX_GET_RECORDS_BYTES_CEILING,
    ConfigError,
    LimitsConfig,
    load_config,
)

NODE = '[[nodes]]\nid = "n1"\naddress = "127.0.0.1:7001"\n'
KEYS = (
    "max_client_streams",
    "max_inflight_per_connection",
    "max_get_records_bytes",
    "max_watch_subscribers",
    "max_streams",
    "max_native_connections",
)


def load(tmp_path: Path, limits: str) -> LimitsConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(limits + "\n" + NODE)
    return load_config(path).limits


def test_every_key_is_optional_with_its_default(tmp_path: Path) -> None:
    expected = LimitsConfig(
        max_client_streams=DEFAULT_MAX_CLIENT_STREAMS,
        max_inflight_per_connection=DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
        max_get_records_bytes=DEFAULT_MAX_GET_RECORDS_BYTES,
        max_watch_subscribers=DEFAULT_MAX_WATCH_SUBSCRIBERS,
        max_streams=DEFAULT_MAX_STREAMS,
        max_native_connections=DEFAULT_MAX_NATIVE_CONNECTIONS,
    )
    assert load(tmp_path, "") == expected
    assert load(tmp_path, "[limits]\n") == expected


def test_each_key_is_read(tmp_path: Path) -> None:
    text = "[limits]\n" + "".join(f"{key} = {i + 1}\n" for i, key in enumerate(KEYS))
    assert load(tmp_path, text) == LimitsConfig(1, 2, 3, 4, 5, 6)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "expected an integer >= 1 (got 0)"),
        ("-5", "expected an integer >= 1 (got -5)"),
        ('"100"', "expected an integer (got '100')"),
        ("1.5", "expected an integer (got 1.5)"),
        ("true", "expected an integer (got True)"),
    ],
)
def test_bad_values_name_the_file_the_key_and_what_is_expected(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[limits]\n{key} = {value}\n")
    assert str(info.value) == f"{tmp_path / 'cluster.toml'}: limits.{key}: {expected}"


def test_a_read_answer_must_fit_a_grpc_message(tmp_path: Path) -> None:
    too_big = MAX_GET_RECORDS_BYTES_CEILING + 1
    assert load(tmp_path, f"[limits]\nmax_get_records_bytes = {too_big - 1}\n")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[limits]\nmax_get_records_bytes = {too_big}\n")
    assert str(info.value).endswith(
        f"limits.max_get_records_bytes: expected at most {MAX_GET_RECORDS_BYTES_CEILING} bytes,"
        f" so an answer fits a gRPC message (got {too_big})"
    )


def test_unknown_keys_and_a_non_table_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"limits\.max_stream: unknown key; expected one of: "):
        load(tmp_path, "[limits]\nmax_stream = 3\n")
    with pytest.raises(ConfigError, match=r": limits: expected a \[limits\] table"):
        load(tmp_path, "limits = 3\n")
