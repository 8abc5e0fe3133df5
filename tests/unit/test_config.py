"""Configuration: flags win over the environment, which wins over defaults; bad values are
refused with the flag and the variable named."""

from __future__ import annotations

import pytest

from server.config import Settings, load_settings


def test_defaults_env_and_flags_in_that_order() -> None:
    assert load_settings([], env={}) == Settings()
    from_env = load_settings([], env={"ORDERS_QUEUE_MAX_COMMANDS": "5000"})
    assert from_env.queue_max_commands == 5000
    both = load_settings(
        ["--queue-max-commands", "7000"], env={"ORDERS_QUEUE_MAX_COMMANDS": "5000"}
    )
    assert both.queue_max_commands == 7000


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--queue-max-commands", "0"], {}, "ORDERS_QUEUE_MAX_COMMANDS"),
        ([], {"ORDERS_CQL_PORT": "not-a-port"}, "ORDERS_CQL_PORT"),
        (["--cql-consistency", "SOMETIMES"], {}, "LOCAL_QUORUM"),
        (["--batch-max-commands", "5000", "--queue-max-commands", "100"], {}, "exceed"),
        (["--auth-tokens", "nonsense"], {}, "token=client_id"),
    ],
)
def test_bad_settings_are_refused(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_settings(argv, env=env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_token_pairs() -> None:
    settings = load_settings(["--auth-tokens", "t1=svc-a, t2=svc-b"], env={})
    assert settings.token_clients == {"t1": "svc-a", "t2": "svc-b"}
