"""Hostile and broken declarations, generated: never a crash, always a located error.

Four fuzz tests share ``$FUZZ_BUDGET`` (``make fuzz``: 100,000 cases; ``make
test``: a few hundred). Each counts the cases it really ran and records them.

* text: YAML text (mutated valid declarations, anchors/aliases, deep nesting,
  duplicate keys, NaN/Infinity, unicode and control characters, binary junk)
  through ``loading.load_text``, then every valid declaration through
  ``inventory.assemble`` and ``merging.merge_account``.
* bodies: valid declarations with a wrong value of any type put anywhere, and
  credential-like fields in any spelling and nesting, through
  ``declarations.parse`` and the merge; a fake key never reaches an output or a
  finding.
* operator: the same hostile bodies as custom resources that bypassed
  admission, through ``records.observe`` and the operator's per-account render
  (``reconciling.Reconciler.account``) with a recording writer; nothing raises
  and no status, event or output carries the fake key.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import math
import re
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import schemafiles
from controller.cluster import metrics, reconciling
from controller.cluster.runtime import records, resources
from controller.core import catalog, declarations, findings, inventory, merging
from controller.files import loading
from tests.cluster import fakes
from tests.core import builders
from tests.reliability.conftest import Figures, fuzz_budget

CATALOG = schemafiles.load_catalog()
FAKE_KEY = "sk-FUZZKEY-0xBADC0DE-must-not-leak"

# The budget is shared: text and bodies take most, the operator render is slower.
SHARES = {"text": 0.4, "bodies": 0.35, "operator": 0.25}


def _settings(share: str) -> settings:
    return settings(
        max_examples=max(20, int(fuzz_budget() * SHARES[share])),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# --- generators ----------------------------------------------------------------

weird_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=24
) | st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\x1b[31m",
        "\u202e",
        "\ufeff",
        "a\nb",
        "名前",
        "💥",
        "..",
        "../../etc",
        "-",
        "a" * 300,
        "NaN",
        ".inf",
        "~",
        "null",
        "yes",
        "0x10",
        "1e999",
    ]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and Infinity included: they must be refused, never merged
    | weird_text
)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(weird_text, inner, max_size=4),
    max_leaves=12,
)
credential_names = st.sampled_from(
    [
        "apiKey",
        "api_key",
        "APIKEY",
        "Api-Key",
        "openai_api_key",
        "runware_api_key",
        "OPENAI_API_KEY",
        "clientSecret",
        "secret",
        "x_secret_y",
        "password",
        "PassWord",
        "auth_token",
        "accessToken",
        "token",
        "\uff41\uff50\uff49\uff2b\uff45\uff59",  # apiKey in fullwidth letters
        "api\u200bkey",  # zero-width space
    ]
)


def _valid_bodies() -> list[dict[str, Any]]:
    return [
        builders.global_body(),
        builders.account_body("acct-1", "pro"),
        builders.account_body("acct-2", "free", "acct-2"),
        builders.override_body("openai", "acct-1", {"model": "gpt-4o", "temperature": 0.8}),
        builders.override_body(
            "image_generation", "acct-1", {"service": "runware", "sizes": {"a": "10x10"}}
        ),
        builders.override_body("openai", "acct-2", {"max_tokens": 10}, is_active=True),
    ]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _put(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = body
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return body


@st.composite
def hostile_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid declaration with a few values replaced by anything, and keys planted."""
    body = copy.deepcopy(draw(st.sampled_from(_valid_bodies())))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths[1:]))  # never the root itself
        with contextlib.suppress(TypeError, KeyError, IndexError):
            body = _put(body, path, draw(json_like))
    if draw(st.booleans()):
        # A credential-like field somewhere below spec, any spelling, any depth.
        name = draw(credential_names)
        holder = body.setdefault("spec", {}) if isinstance(body, dict) else {}
        if isinstance(holder, dict):
            target = draw(st.sampled_from(["spec", "overrides", "defaults", "deep"]))
            if target == "overrides" and isinstance(holder.get("overrides"), dict):
                holder["overrides"][name] = FAKE_KEY
            elif target == "defaults":
                integrations = holder.get("integrations")
                for integ in integrations.values() if isinstance(integrations, dict) else ():
                    if isinstance(integ, dict) and isinstance(integ.get("defaults"), dict):
                        integ["defaults"][name] = FAKE_KEY
            elif target == "deep" and isinstance(holder.get("overrides"), dict):
                holder["overrides"]["sizes"] = {"x": {name: FAKE_KEY}}
                holder["overrides"][name.upper()] = [FAKE_KEY]
            else:
                holder[name] = FAKE_KEY
    return body


def _bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [x]"]
    for i in range(1, levels):
        refs = ", ".join(f"*a{i - 1}" for _ in range(width))
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    kind = draw(
        st.sampled_from(
            ["mutated", "bomb", "deep", "dupkeys", "nonfinite", "bigint", "junk", "multi", "tags"]
        )
    )
    if kind == "mutated":
        text = yaml.safe_dump(draw(hostile_bodies()), allow_unicode=draw(st.booleans()))
        for _ in range(draw(st.integers(0, 4))):
            pos = draw(st.integers(0, len(text)))
            op = draw(st.sampled_from(["insert", "delete", "truncate"]))
            if op == "insert":
                text = (
                    text[:pos]
                    + draw(weird_text | st.sampled_from(list(":-{}[]&*!|>'\"#%@`\t\n")))
                    + text[pos:]
                )
            elif op == "delete":
                text = text[:pos] + text[pos + draw(st.integers(1, 8)) :]
            else:
                text = text[:pos]
        return text
    if kind == "bomb":
        return _bomb(draw(st.integers(2, 12)), draw(st.integers(2, 12)))
    if kind == "deep":
        depth = draw(st.integers(30, 3000))
        if draw(st.booleans()):
            return "spec: " + "[" * depth + "]" * depth + "\n"
        return "spec: " + "{a: " * depth + "1" + "}" * depth + "\n"
    if kind == "dupkeys":
        return "kind: Account\nkind: Account\nmetadata: {name: a, name: b}\n"
    if kind == "nonfinite":
        v = draw(st.sampled_from([".nan", ".NaN", ".inf", "-.Inf", "1e400"]))
        return (
            "apiVersion: integrations.igny8.com/v1alpha1\nkind: IntegrationSettings\n"
            f"metadata: {{name: openai, namespace: a}}\nspec: {{overrides: {{temperature: {v}}}}}\n"
        )
    if kind == "bigint":
        digits = "9" * draw(st.integers(4000, 6000))
        return f"kind: IntegrationSettings\nspec: {{overrides: {{max_tokens: {digits}}}}}\n"
    if kind == "junk":
        return draw(st.binary(max_size=200)).decode("latin-1")
    if kind == "tags":
        tag = draw(
            st.sampled_from(
                [
                    "!!binary aGk=",
                    "!!set {a}",
                    "!custom x",
                    "!!python/object:os.system x",
                    "<<: {a: 1}",
                    "!!timestamp 2001-12-14",
                ]
            )
        )
        return f"kind: Account\nspec: {tag}\n"
    docs = draw(st.lists(hostile_bodies(), min_size=0, max_size=4))
    return "\n---\n".join(json.dumps(d, allow_nan=True) for d in docs)


# --- the properties ----------------------------------------------------------


def _located(finding: findings.Finding, relpath: str, lines: int) -> None:
    assert finding.message and "Traceback" not in finding.message
    assert FAKE_KEY not in finding.message
    ref = finding.source
    assert isinstance(ref, loading.DocRef), finding
    assert ref.path == relpath
    assert 1 <= ref.line <= lines + 1, (ref, lines)


def _merge_all(decls: list[declarations.Declaration]) -> int:
    """Assemble and merge every account; the count of merged accounts."""
    inv = inventory.assemble(decls)
    for f in inv.findings:
        assert f.message and FAKE_KEY not in f.message
    if inv.global_ is None:
        return 0
    for account in inv.accounts.values():
        result = merging.merge_account(
            CATALOG, inv.global_, account, inv.overrides.get(account.namespace, {})
        )
        for text in result.data.values():
            assert FAKE_KEY not in text
            json.loads(text)  # outputs are JSON: no NaN, no Infinity
            assert "NaN" not in text and "Infinity" not in text
        for f in result.findings:
            assert FAKE_KEY not in f.message
    return len(inv.accounts)


class Counter:
    def __init__(self) -> None:
        self.cases = 0
        self.errors = 0
        self.merged = 0


def test_fuzz_yaml_text_never_crashes(figures: Figures) -> None:
    count = Counter()

    @_settings("text")
    @given(yaml_texts())
    def check(text: str) -> None:
        count.cases += 1
        loaded = loading.load_text(CATALOG, "decls/f.yaml", text)
        # YAML's line breaks: NEL, LS and PS count too (an editor may show fewer lines).
        lines = len(re.split("\r\n|[\r\n\x85\u2028\u2029]", text))
        for f in loaded.errors:
            _located(f, "decls/f.yaml", lines)
            count.errors += 1
        for decl in loaded.declarations:
            assert isinstance(decl.source, loading.DocRef)
        count.merged += _merge_all([*loaded.declarations, *_globals()])

    check()
    figures["cases"] = count.cases
    figures["located errors"] = count.errors
    figures["accounts merged"] = count.merged
    figures["crashes"] = 0


def _globals() -> list[declarations.Declaration]:
    return [builders.parsed(CATALOG, builders.global_body())]


def test_fuzz_hostile_bodies_parse_and_merge(figures: Figures) -> None:
    count = Counter()

    @_settings("bodies")
    @given(st.lists(hostile_bodies(), min_size=1, max_size=6))
    def check(bodies_: list[dict[str, Any]]) -> None:
        count.cases += 1
        decls: list[declarations.Declaration] = []
        for i, body in enumerate(bodies_):
            decl, problems = declarations.parse(CATALOG, body, ("doc", i))
            assert (decl is None) == bool(problems)
            for p in problems:
                count.errors += 1
                assert p.message and FAKE_KEY not in p.message
                assert p.ref is not None and FAKE_KEY not in str(p.ref)
            if decl is not None:
                decls.append(decl)
        count.merged += _merge_all(
            decls
            if any(isinstance(d, declarations.GlobalSettings) for d in decls)
            else [*decls, *_globals()]
        )

    check()
    figures["cases"] = count.cases
    figures["rejections (named field)"] = count.errors
    figures["accounts merged"] = count.merged
    figures["key leaks"] = 0


class NoKeys:
    def value(self, secret_name: str, key: str) -> str | None:
        return None


def _as_object(body: Any, uid: str) -> dict[str, Any]:
    """What the API server would hand out: metadata is the server's, the rest is as stored."""
    out = dict(body) if isinstance(body, dict) else {"spec": body}
    meta = out.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    out["metadata"] = {"name": str(name) if name else "x", "uid": uid, "generation": 3}
    if isinstance(namespace, str) and namespace:
        out["metadata"]["namespace"] = namespace
    return out


def test_fuzz_operator_render_of_objects_that_bypassed_admission(figures: Figures) -> None:
    count = Counter()

    @_settings("operator")
    @given(st.lists(hostile_bodies(), min_size=1, max_size=5), st.booleans())
    def check(raw: list[dict[str, Any]], with_valid_global: bool) -> None:
        count.cases += 1
        observed = [records.observe(CATALOG, _as_object(b, f"uid-{i}")) for i, b in enumerate(raw)]
        if with_valid_global:
            observed.append(records.observe(CATALOG, _as_object(builders.global_body(), "g")))
        for o in observed:
            for p in o.problems:
                assert FAKE_KEY not in p.message
        # The operator's own stores, as operating.Operator builds them.
        observe = functools.partial(records.observe, CATALOG)
        globals_ = resources.Resources(catalog.GLOBAL, observe)
        accounts = resources.Resources(catalog.ACCOUNT, observe, group=lambda o: o.claims)
        overrides = resources.Resources(catalog.OVERRIDE, observe)
        globals_.replace(o for o in observed if o.kind == catalog.GLOBAL)
        overrides.replace(o for o in observed if o.kind == catalog.OVERRIDE)
        accounts.replace(o for o in observed if o.kind not in (catalog.GLOBAL, catalog.OVERRIDE))
        views = reconciling.Views(
            globals=globals_.named,
            accounts=accounts.named,
            tenants=accounts.grouped,
            overrides=overrides.grouped,
            configmaps={},
            secrets={},
        )
        writer = fakes.RecordingWriter()

        async def main() -> None:
            r = reconciling.Reconciler(CATALOG, writer, NoKeys(), views, metrics.Metrics())
            try:
                await r.global_changed()
                for name in list(views.accounts):
                    await r.account(name)
                for ns in list(views.overrides):
                    await r.namespace(ns)
            finally:
                await r.close()

        asyncio.run(main())
        assert FAKE_KEY not in writer.dump()
        count.merged += sum(1 for m in writer.applied if m.get("kind") == "ConfigMap")
        count.errors += len(writer.events)

    check()
    figures["cases"] = count.cases
    figures["ConfigMaps rendered"] = count.merged
    figures["Warning events (value-free)"] = count.errors
    figures["key leaks"] = 0


def test_non_finite_numbers_never_reach_an_output() -> None:
    """NaN/Infinity in an override (a body that bypassed the YAML loader) reject that field."""
    global_ = builders.parsed(CATALOG, builders.global_body())
    account = builders.parsed(CATALOG, builders.account_body("acct-1", "pro"))
    for v in (math.nan, math.inf, -math.inf):
        body = builders.override_body("openai", "acct-1", {"temperature": v, "model": "gpt-4o"})
        decl, problems = declarations.parse(CATALOG, body)
        if decl is None:
            assert problems
            continue
        result = merging.merge_account(CATALOG, global_, account, {"openai": decl})
        openai = json.loads(result.data["openai.json"])
        assert openai["temperature"] == 0.7 and openai["model"] == "gpt-4o"
        assert any("temperature" in f.message for f in result.findings)
