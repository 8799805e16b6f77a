"""A recognisable fake key in every place a user could write one reaches no output and no log."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import time

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


def test_key_checks_print_no_key_fragment(cli: RunCli, tmp_path: pathlib.Path) -> None:
    """test-connection with the canary as every platform key, refused by providers whose 401
    quotes it ("sk-LEA***fXYZ"), rate-limited, failing: no fragment of it is printed."""
    import yaml

    from tests.connections import conftest as connections_conftest
    from tests.connections import providers

    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("openai", "dalle", "runware"):
        (keys / name).write_text(KEY)
    fragments = [KEY, providers.quoted(KEY), KEY[:6] + "***", KEY[-8:]]
    printed: list[str] = []
    with providers.Providers(refuse=frozenset({KEY})) as fake:
        path = tmp_path / "global.yaml"
        path.write_text(yaml.safe_dump(connections_conftest.global_body(
            connections_conftest.local_endpoints(fake))))  # fmt: skip
        for fmt in ("table", "json", "yaml"):
            done = cli("--verbose", "test-connection", path, "--keys-dir", keys, "-o", fmt)
            printed += [done.stdout, done.stderr]
            assert done.returncode == 1 and "InvalidKey" in done.stdout
        assert ("openai", KEY) in fake.requests and ("runware", KEY) in fake.requests
    assert [(i, f) for i, text in enumerate(printed) for f in fragments if f in text] == []
