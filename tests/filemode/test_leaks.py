"""A recognisable fake key in every place a user could write one reaches no output and no log."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import time

import pytest

from tests.conftest import CLI, RunCli

KEY = "sk-LEAKCANARY-0123456789abcdefXYZ"

HEADER = "apiVersion: integrations.igny8.com/v1alpha1\n"

DECLARATIONS = {
    "global.yaml": f"""\
{HEADER}kind: GlobalIntegrationSettings
metadata:
  name: default
  annotations: {{openai-key: {KEY}}}
  labels: {{key: {KEY}}}
spec:
  plans: {{pro: {{allowOverrides: true}}, free: {{allowOverrides: false}}}}
  integrations:
    openai:
      credentials:
        apiKey: {{secretName: platform-api-keys, key: openai}}
      defaults: {{model: gpt-4o-mini, temperature: 0.7, max_tokens: 8192}}
    image_generation:
      credentials:
        dalle: {{secretName: platform-api-keys, key: dalle}}
        runware: {{secretName: platform-api-keys, key: runware}}
      defaults: {{service: openai, model: dall-e-3, image_quality: standard, image_style: vivid,
                 sizes: {{featured: 1024x1024}}}}
""",
    # The global again, with the key written where only references belong. It
    # is invalid, so it lives in its own directory tree (see below).
    "accounts/pro.yaml": f"""\
{HEADER}kind: Account
metadata: {{name: pro, annotations: {{note: {KEY}}}}}
spec: {{plan: pro, namespace: pro}}
---
{HEADER}kind: IntegrationSettings
metadata: {{name: openai, namespace: pro}}
spec:
  overrides:
    model: gpt-4o
    apiKey: {KEY}
    api_key: {KEY}
    openai_api_key: {KEY}
    OpenAI-API-Key: {KEY}
    clientSecret: {KEY}
    password: {KEY}
    auth_token: {KEY}
    extra: {{deep: [{{apiKey: {KEY}}}]}}
    {KEY}: 1
# apiKey: {KEY}
---
{HEADER}kind: IntegrationSettings
metadata: {{name: image_generation, namespace: pro}}
spec:
  overrides:
    model: {KEY}
    sizes: {{featured: 1024x1024, token: {KEY}}}
    image_style: natural
""",
    "accounts/free.yaml": f"""\
{HEADER}kind: Account
metadata: {{name: free}}
spec: {{plan: free, namespace: free}}
---
{HEADER}kind: IntegrationSettings
metadata: {{name: openai, namespace: free}}
spec:
  overrides: {{apiKey: {KEY}, model: gpt-4o}}
""",
    "accounts/broken-values.yaml": f"""\
{HEADER}kind: Account
metadata: {{name: {KEY}}}
spec: {{plan: {KEY}, namespace: {KEY}, apiKey: {KEY}}}
---
{HEADER}kind: IntegrationSettings
metadata: {{name: {KEY}, namespace: pro}}
spec: {{isActive: {KEY}, overrides: {KEY}}}
""",
    "accounts/broken-yaml.yaml": f"apiKey: {KEY}\n  nested: [{KEY}\n",
    "accounts/literal-global.yaml": f"""\
{HEADER}kind: GlobalIntegrationSettings
metadata: {{name: default}}
spec:
  integrations:
    openai:
      credentials: {{apiKey: {KEY}}}
      apiKey: {KEY}
      defaults: {{model: gpt-4o-mini, temperature: 0.7, max_tokens: 8192, openai_api_key: {KEY}}}
""",
}


def write_tree(root: pathlib.Path) -> None:
    for name, text in DECLARATIONS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def scan(out: pathlib.Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if p.is_file() and KEY in p.read_text(errors="replace")]


def test_key_reaches_no_output_and_no_log(cli: RunCli, tmp_path: pathlib.Path) -> None:
    decl, out = tmp_path / "decl", tmp_path / "out"
    write_tree(decl)
    # Without the second global the valid accounts render, so outputs exist to scan.
    literal = (decl / "accounts" / "literal-global.yaml").read_text()
    (decl / "accounts" / "literal-global.yaml").unlink()
    logs: list[str] = []

    done = cli("reconcile", decl, "--output-dir", out)
    logs += [done.stdout, done.stderr]
    assert done.returncode == 1
    assert (out / "pro" / "openai.json").is_file() and (out / "free" / "openai.json").is_file()
    assert "spec.overrides.apiKey: stripped" in done.stderr  # reported, by name

    for args in (("validate", decl), ("validate", "-o", "json", decl)):
        done = cli(*args)
        logs += [done.stdout, done.stderr]
        assert done.returncode == 1
    for account in ("pro", "free"):
        for fmt in ("table", "json", "yaml"):
            done = cli("get", account, "-d", decl, "-o", fmt)
            logs += [done.stdout, done.stderr]
            assert done.returncode == 0, done.stderr

    # watch, fed the key again while it runs, including where a key is literal in the global.
    log_path = tmp_path / "watch.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(CLI), "watch", str(decl), "--output-dir", str(out)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 15
            while "start:" not in log_path.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            (decl / "accounts" / "literal-global.yaml").write_text(literal)
            while (
                "literal-global.yaml:" not in log_path.read_text() and time.monotonic() < deadline
            ):
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
    logs.append(log_path.read_text())
    done = cli("validate", "-o", "json", decl)
    logs += [done.stdout, done.stderr]
    assert "literal-global.yaml" in done.stdout
    assert "start:" in logs[-3] and "literal-global.yaml:" in logs[-3]

    assert scan(out) == []
    assert [i for i, text in enumerate(logs) if KEY in text] == []
    # Sanity: the canary is really in the declarations, in every place above.
    assert sum(text.count(KEY) for text in DECLARATIONS.values()) >= 25


def test_key_checks_print_no_key_fragment(
    cli: RunCli, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """test-connection with the canary as every platform key, refused by the provider
    simulator, whose 401 quotes it ("sk-LEA***fXYZ"): no fragment of it is printed."""
    import yaml

    from tests.connections import conftest as connections_conftest
    from tests.providers import simulator

    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("openai", "dalle", "runware"):
        (keys / name).write_text(KEY)
    fragments = [KEY, simulator.quoted(KEY), KEY[:6] + "***", KEY[-8:]]
    printed: list[str] = []
    with simulator.Simulator() as sim:
        sim.refuse.add(KEY)
        for name, value in sim.env().items():
            monkeypatch.setenv(name, value)
        path = tmp_path / "global.yaml"
        path.write_text(yaml.safe_dump(connections_conftest.global_body(
            connections_conftest.local_endpoints(sim))))  # fmt: skip
        for fmt in ("table", "json", "yaml"):
            done = cli("--verbose", "test-connection", path, "--keys-dir", keys, "-o", fmt)
            printed += [done.stdout, done.stderr]
            assert done.returncode == 1 and "InvalidKey" in done.stdout
        assert ("openai", KEY) in sim.received and ("runware", KEY) in sim.received
    assert [(i, f) for i, text in enumerate(printed) for f in fragments if f in text] == []


# A key pasted where YAML syntax goes, not where a value goes: each of these once
# made an error message that quoted it (a duplicate key, a tag), or a traceback
# (``!!bool`` on text that is no boolean: a KeyError holding the text).
YAML_SYNTAX = {
    "duplicate-key.yaml": f"{HEADER}kind: Account\nmetadata: {{name: dup}}\n{KEY}: 1\n{KEY}: 2\n",
    "duplicate-nested-key.yaml": f"{HEADER}kind: Account\nspec:\n  {KEY}: 1\n  {KEY}: 2\n",
    "tag.yaml": f"{HEADER}kind: Account\nmetadata: {{name: !{KEY} tagged}}\n",
    "tag-on-a-mapping-key.yaml": f"!{KEY} a: 1\n",
    "standard-tag.yaml": f"a: !!{KEY} x\n",
    "tag-directive.yaml": f"%TAG !k! tag:{KEY},2000:\n---\na: !k!x 1\n",
    "undefined-alias.yaml": f"a: *{KEY}\n",
    "duplicate-anchor.yaml": f"a: &{KEY} 1\nb: &{KEY} 2\n",
    "bool.yaml": f"a: !!bool {KEY}\n",
    "int.yaml": f"a: !!int {KEY}\n",
    "float.yaml": f"a: !!float {KEY}\n",
    "omap.yaml": f"a: !!omap {KEY}\n",
    "flow-mapping.yaml": f"{{{KEY}: 1, {KEY}: 2}}\n",
    "unclosed-quote.yaml": f'a: "{KEY}\n',
}


def test_a_key_in_yaml_syntax_is_never_echoed(cli: RunCli, tmp_path: pathlib.Path) -> None:
    """validate (text, JSON, YAML), reconcile and render name the file, the line and the
    problem of each, and print no run of 8 characters of the key."""
    decl, out = tmp_path / "decl", tmp_path / "out"
    decl.mkdir()
    for name, text in YAML_SYNTAX.items():
        (decl / name).write_text(text)
    printed = []
    for args in (
        ("validate", decl),
        ("validate", "-o", "json", decl),
        ("validate", "-o", "yaml", decl),
        ("reconcile", decl, "--output-dir", out),
        ("render", decl),
    ):
        done = cli(*args)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        printed.append(done.stdout + done.stderr)
    for name in YAML_SYNTAX:
        assert f"{decl / name}:" in printed[0], (name, printed[0])
    assert "duplicate key: the same key is already set at line 4" in printed[0]
    runs = {KEY[i : i + 8] for i in range(len(KEY) - 7)}
    leaks = [(i, r) for i, text in enumerate(printed) for r in sorted(runs) if r in text]
    assert leaks == []
