"""The remote_write section as a user writes it: Prometheus's keys, every mistake with its line, secrets never
shown, and an agent that does not push never loading the push code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from agent.config.agent import parse_config
from agent.config.problems import ConfigError
from agent.config.yaml import load_text


def parse(text: str):
    return parse_config(load_text(textwrap.dedent(text), "agent.yaml"), "agent.yaml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return [str(problem) for problem in caught.value.problems]


def test_prometheus_shaped_endpoints_parse_with_defaults(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config, report = parse(f"""
        global: {{interval: 30s}}
        external_labels: {{cluster: eu-1}}
        remote_write_buffer: {tmp_path}/buffer
        remote_write:
          - url: https://mimir.example/api/v1/push
            name: mimir
            remote_timeout: 10s
            headers: {{X-Scope-OrgID: team-a}}
            authorization: {{credentials_file: {token}}}
            write_relabel_configs:
              - {{source_labels: [__name__], regex: 'go_.*', action: drop}}
            queue_config: {{max_samples_per_send: 1000, max_shards: 2, min_backoff: 100ms, max_backoff: 10s}}
            max_buffer_size: 256MiB
          - url: http://vm:8428/api/v1/write
        """)
    assert not report.warnings
    mimir, vm = config.remote_write
    assert (mimir.name, mimir.remote_timeout, mimir.headers, mimir.interval) == (
        "mimir", 10.0, (("X-Scope-OrgID", "team-a"),), 30.0)
    assert mimir.authorization[0] == "Bearer" and mimir.authorization[1].file == str(token)
    assert mimir.queue.max_samples_per_send == 1000 and mimir.queue.max_backoff == 10.0
    assert mimir.max_buffer_size == 256 << 20 and len(mimir.write_relabel) == 1
    assert len(vm.name) == 6 and vm.interval == 30.0 and vm.remote_timeout == 30.0  # Prometheus's defaults
    assert config.external_labels == {"cluster": "eu-1"}
    assert config.remote_write_buffer == f"{tmp_path}/buffer"


def test_mistakes_are_reported_with_their_line():
    found = errors("""
        remote_write:
          - url: ftp://nowhere/
          - url: http://a/write
            headers: {Content-Encoding: gzip}
            basic_auth: {username: u}
            queue_config: {max_shards: 0, min_backoff: 10s, max_backoff: 1s, capacity: many}
            sigv4: {region: eu-west-1}
          - url: http://a/write
        external_labels: {"bad-name": x}
        """)
    assert "agent.yaml:3: remote_write[0].url: 'ftp://nowhere/' is not an http(s) URL with a host" in found
    assert any(p.startswith("agent.yaml:5: remote_write[1].headers: Content-Encoding is set by the agent")
               for p in found)
    assert "agent.yaml:6: remote_write[1].basic_auth: needs exactly one of password or password_file" in found
    assert any(p.startswith("agent.yaml:7: remote_write[1].queue_config.max_shards:") for p in found)
    assert "agent.yaml:7: remote_write[1].queue_config.min_backoff: is longer than max_backoff" in found
    assert "agent.yaml:8: remote_write[1].sigv4: unknown field" in found
    assert any(p.startswith("agent.yaml:9: remote_write[2].url:") and "same url: give each a name" in p
               for p in found)
    assert any(p.startswith("agent.yaml:10: external_labels:") for p in found)


def test_prometheus_only_keys_load_with_a_warning_and_no_buffer_directory_is_warned():
    config, report = parse("""
        remote_write:
          - url: http://a/write
            queue_config: {min_shards: 2, batch_send_deadline: 5s}
        """)
    warnings = [str(w) for w in report.warnings]
    assert any("min_shards: has no effect here" in w for w in warnings)
    assert any("batch_send_deadline: has no effect here" in w for w in warnings)
    assert any("no remote_write_buffer directory" in w for w in warnings)


def test_secrets_never_appear_in_errors_or_the_parsed_config():
    found = errors("""
        remote_write:
          - url: http://user:hunter2@a/write?token=abc
            basic_auth: {username: u, password: hunter2}
            headers: {X-Token: "x\\ny"}
        """)
    assert not any("hunter2" in p for p in found), found
    assert any("remote_write[0].url: holds credentials" in p for p in found)
    config, _ = parse("""
        remote_write:
          - url: http://a/write
            basic_auth: {username: u, password: hunter2}
        """)
    assert "hunter2" not in repr(config.remote_write)
    from agent.push.config import redacted_url

    assert redacted_url("https://user:hunter2@a.example/w?token=abc") == "https://a.example/w"


def test_an_agent_that_does_not_push_never_loads_the_push_code(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("")
    config = tmp_path / "agent.yaml"
    config.write_text(f"logs:\n  - {{name: a, paths: ['{log}'], format: logfmt, metrics: "
                      "[{name: lines_total, type: counter}]}\n")
    code = textwrap.dedent(f"""
        import asyncio, sys
        from agent.config.agent import load_config
        from agent.runtime.agent import Agent

        async def main():
            agent = Agent(lambda: load_config({str(config)!r})[0], "127.0.0.1:0")
            await agent.start()
            await agent.stop()
            print(sorted(m for m in sys.modules if m.startswith("agent.push") or m == "cramjam"))

        asyncio.run(main())
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]
