"""asyncio imported without ssl (agent.runtime.lazyssl): once anything imports ssl, asyncio's modules hold what a
plain ``import asyncio`` gives them, and TLS works both ways. Each case runs in a fresh interpreter (the test
process has long imported asyncio and ssl)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
WITHOUT_SSL = "from agent.runtime import lazyssl\nlazyssl.import_asyncio()\nassert 'ssl' not in sys.modules\n"

ASYNCIO_GLOBALS = textwrap.dedent("""
    import json, sys, types
    {prelude}
    import ssl

    def describe(value):
        if isinstance(value, types.ModuleType):
            return "module " + value.__name__
        if isinstance(value, tuple):
            return "tuple " + repr([getattr(item, "__qualname__", repr(item)) for item in value])
        return type(value).__name__

    print(json.dumps({{name: {{key: describe(value) for key, value in vars(module).items()}}
                      for name, module in sys.modules.items()
                      if module is not None and name != "__main__" and name.split(".")[0] != "agent"}}))
""")

TLS_ROUND_TRIP = textwrap.dedent("""
    import sys
    {prelude}
    import asyncio

    async def main(cert, key):
        import ssl  # the first import of ssl: from here asyncio can speak TLS

        server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_side.load_cert_chain(cert, key)
        client_side = ssl.create_default_context(cafile=cert)

        async def echo(reader, writer):
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_side)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_side)
        writer.write(b"x" * 50000 + b"hello over tls\\n")  # several TLS records
        answer = await reader.readline()
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        server.close()
        print(answer[-15:].decode().strip(), version)

    asyncio.run(main(*sys.argv[1:]))
""")


def _python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that trusts itself, and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                    str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


# A library asking whether ssl exists before anything imports it: the hand-over still happens at the import
ASKED_FIRST = "import importlib.util\nassert importlib.util.find_spec('ssl') is not None\n"


@pytest.mark.parametrize("asked_first", [False, True])
def test_once_ssl_is_imported_asyncio_holds_what_a_plain_import_gives_it(asked_first):
    prelude = WITHOUT_SSL + (ASKED_FIRST if asked_first else "")
    lazy = json.loads(_python(ASYNCIO_GLOBALS.format(prelude=prelude)))
    # the same modules imported, lazyssl's own imports (and __future__) included, but asyncio imported plainly
    plain_prelude = "from agent.runtime import lazyssl\nimport asyncio\n" + (ASKED_FIRST if asked_first else "")
    plain = json.loads(_python(ASYNCIO_GLOBALS.format(prelude=plain_prelude)))
    assert lazy["asyncio.sslproto"]["ssl"] == "module ssl"
    assert lazy == plain


def test_the_finder_steps_aside_once_ssl_is_imported():
    code = "import sys\n" + WITHOUT_SSL
    code += "finders = len(sys.meta_path)\nimport ssl\nprint(finders - len(sys.meta_path))"
    assert _python(code).strip() == "1"


def test_tls_serves_and_connects_after_asyncio_was_imported_without_ssl(tmp_path):
    cert, key = self_signed(tmp_path)
    assert _python(TLS_ROUND_TRIP.format(prelude=WITHOUT_SSL), str(cert), str(key)).split() == \
        ["HELLO", "OVER", "TLS", "TLSv1.3"]


@pytest.mark.parametrize("loaded", ["asyncio", "ssl"])
def test_nothing_changes_when_asyncio_or_ssl_is_already_loaded(loaded):
    code = f"import sys, {loaded}\n{WITHOUT_SSL.replace('assert', 'assert not')}"
    code += "print(sys.modules['asyncio'].sslproto.ssl)"
    assert "<module 'ssl'" in _python(code)
