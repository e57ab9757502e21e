"""--web.config.file: the exporter-toolkit file (TLS, basic auth, headers) on a real agent."""

import base64
import ssl
import subprocess

import aiohttp
import bcrypt
import pytest

from agent.config import AgentConfig, GlobalConfig
from agent.runtime import Agent
from agent.webconfig import load_web_config
from agent.yamlsrc import ConfigError


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def start_agent(web_config) -> Agent:
    agent = Agent(lambda: AgentConfig("<test>", GlobalConfig()), "127.0.0.1:0", web_config)
    await agent.start()
    return agent


async def test_basic_auth_and_headers(tmp_path):
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {hashed}\n"
                    "http_server_config:\n  headers: {X-Frame-Options: deny}\n")
    agent = await start_agent(load_web_config(str(path)))
    url = f"http://127.0.0.1:{agent.bound_port}/metrics"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Basic")
            for password, status in (("wrong", 401), ("s3cret", 200), ("s3cret", 200)):
                auth = {"Authorization": "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()}
                async with session.get(url, headers=auth) as response:
                    assert response.status == status
                    assert response.headers["X-Frame-Options"] == "deny"
            garbage = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}
            async with session.get(url, headers=garbage) as response:
                assert response.status == 401
    finally:
        await agent.stop()


async def test_tls_serving(tmp_path, certificate):
    cert, key = certificate
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS12\n")
    agent = await start_agent(load_web_config(str(path)))
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{agent.bound_port}/-/healthy", ssl=trusted) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"https://127.0.0.1:{agent.bound_port}/-/healthy"):
                    pass
    finally:
        await agent.stop()


def test_web_config_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n"
                    "  client_auth_type: RequireAndVerifyClientCert\nbasic_auth_users:\n  bob: plaintext\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    problems = [str(p) for p in info.value.problems]
    assert f"{path}:2: tls_server_config.cert_file: '/nonexistent.pem' does not exist" in problems
    assert f"{path}:4: tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file" in problems
    assert any(p.startswith(f"{path}:5: basic_auth_users: user 'bob': the password must be a bcrypt hash")
               for p in problems)
    assert "plaintext" not in str(info.value)
