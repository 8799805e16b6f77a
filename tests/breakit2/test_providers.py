"""Breaks of the provider-boundary promises (README.md "Test connection"), through the
installed CLI's ``test-connection`` against answers the simulator does not give."""

from __future__ import annotations

import json
import pathlib
import re

from tests.breakit2 import pieces
from tests.conftest import RunCli
from tests.providers import simulator


def _folded_windows(text: str, key: str, run: int = 8) -> list[str]:
    """Runs of ``run`` characters of ``key`` in ``text``, compared without case and without
    separators: what a reader recovers from a case-folded or split echo."""

    def fold(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())

    folded_key, folded_text = fold(key), fold(text)
    return [
        folded_key[i : i + run]
        for i in range(len(folded_key) - run + 1)
        if folded_key[i : i + run] in folded_text
    ]


def _check_code(cli: RunCli, tmp_path: pathlib.Path, code: str) -> str:
    """The provider simulator answers the key 401 with ``code`` as its error code (TLS, its
    CA trusted through SSL_CERT_FILE, as the other provider tests)."""
    with simulator.Simulator(hang=5.0) as sim:
        sim.answer(pieces.KEY, simulator.Answer("custom_code", code=code))
        path, keys = pieces.write_global(tmp_path, sim.openai)
        done = cli(
            "test-connection", path, "--keys-dir", keys, "-o", "json", "--timeout", "5",
            env=sim.env(),
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["connections"][0]["reason"] == "InvalidKey"
    return done.stdout + done.stderr


def test_an_error_code_that_is_the_key_upper_cased_is_not_shown(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """README.md:223-228: "Provider error bodies ... are never copied ...: a provider's
    short error code (`invalid_api_key`) only when no run of 8 characters of any key is in
    it". Broke (in purpose; the letter holds): a provider that answers 401 with
    ``{"error": {"code": "E" + key[8:40].upper()}}`` gets 32 characters of the key, case
    folded, printed as ``(provider code EABC123DEF456...)`` in the table, JSON and YAML and,
    in the operator, in the global's status and Events. The 8-character test is
    case-sensitive: a key with mixed case is then known but for its letters' case.
    Fault: controller/core/connections.py ``provider_code`` (``leaks``/``scrub`` compare
    exactly; a code is accepted if it merely is not a literal run)."""
    out = _check_code(cli, tmp_path, "E" + pieces.KEY[8:40].upper())
    assert _folded_windows(out, pieces.KEY) == []


def test_an_error_code_that_is_the_key_in_7_character_pieces_is_not_shown(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """README.md:223-228 (as above). Broke (in purpose; the letter holds): the code
    ``e_Abc123D_ef456Gh_i789Jkl`` (21 characters of the key, in order, cut every 7 by an
    underscore) is printed whole: ``(provider code e_Abc123D_ef456Gh_i789Jkl)``. Any key is
    copied out 7 characters per separator, so the 8-character window is no bound at all.
    Fault: controller/core/connections.py ``provider_code`` (accepts any identifier-shaped
    code whose literal 8-windows miss the key; it should show only codes from a known list,
    or refuse one sharing any 4+-character piece with a key)."""
    key = pieces.KEY
    code = "e_" + "_".join(key[i : i + 7] for i in (8, 15, 22))
    out = _check_code(cli, tmp_path, code)
    assert _folded_windows(out, key) == []


def test_an_endpoint_holding_a_percent_encoded_key_is_refused(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """README.md:229-230: "An `endpoint` with userinfo (`user:password@`) or anything
    shaped like a key in it is refused, by field, without echoing it." Broke: the same key
    percent-encoded in the path (``https://gw.example/v1/%73%6b%2d%70...``, which a gateway
    decodes back to ``sk-proj-...``) passes ``validate`` (exit 0) and ``test-connection``
    sends it on every check; the global keeps the key in its spec for anyone who may read
    it. Fault: controller/core/credentials.py ``endpoint_problem`` (looks at the raw string,
    never ``urllib.parse.unquote``d), and the same test in controller/generators/celrules.py."""
    encoded = "".join(f"%{b:02x}" for b in pieces.KEY.encode())
    path, _keys = pieces.write_global(tmp_path, f"https://gw.example/v1/{encoded}")
    done = cli("validate", path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "endpoint" in done.stdout + done.stderr


def test_the_endpoint_shown_is_the_origin_checked_port_zero_included(
    cli: RunCli, tmp_path: pathlib.Path
) -> None:
    """README.md:227-228: messages show "the endpoint's origin (`scheme://host[:port]`)".
    Broke: for ``https://127.0.0.1:0/v1`` the row's endpoint is ``https://127.0.0.1`` (port
    443 as any reader takes it), not the origin that was checked (and found Unreachable).
    Fault: controller/core/connections.py ``printable_endpoint``: ``if port`` drops a port
    of 0 (``if port is not None``)."""
    path, keys = pieces.write_global(tmp_path, "https://127.0.0.1:0/v1")
    done = cli("test-connection", path, "--keys-dir", keys, "-o", "json", "--timeout", "5")
    row = json.loads(done.stdout)["connections"][0]
    assert row["endpoint"] == "https://127.0.0.1:0"
