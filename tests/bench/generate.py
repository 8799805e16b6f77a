"""Declarations for N accounts, a realistic mix: ~30% override something, ~10% are on the free plan.

Each account is one file (``accounts/<bucket>/<name>.yaml``, Account plus its
IntegrationSettings), the layout a GitOps repository with one file per tenant
has. Deterministic for a given N.

    python -m tests.bench.generate 10000 DIR
"""

from __future__ import annotations

import pathlib
import random
import shutil
import sys

HEADER = "apiVersion: integrations.igny8.com/v1alpha1\n"
REPO = pathlib.Path(__file__).resolve().parents[2]
MODELS = ["gpt-4o", "gpt-4.1", "gpt-4o-mini"]


def account_name(index: int) -> str:
    return f"acct-{index:06d}"


def account_path(root: pathlib.Path, index: int) -> pathlib.Path:
    return root / "accounts" / f"{index // 1000:03d}" / f"{account_name(index)}.yaml"


def account_text(
    index: int, rng: random.Random, model: str | None = None, plan: str | None = None
) -> str:
    """One account's file; ``model`` forces an OpenAI override, ``plan`` the plan."""
    name = account_name(index)
    drawn = "free" if rng.random() < 0.1 else "pro"
    plan = plan or drawn
    parts = [
        f"{HEADER}kind: Account\nmetadata:\n  name: {name}\nspec:\n  plan: {plan}\n  namespace: {name}\n"
    ]
    if model is not None or rng.random() < 0.3:
        chosen = model or rng.choice(MODELS)
        parts.append(
            f"{HEADER}kind: IntegrationSettings\nmetadata:\n  name: openai\n  namespace: {name}\n"
            f"spec:\n  overrides:\n    model: {chosen}\n    temperature: {rng.randint(0, 20) / 10}\n"
        )
        if rng.random() < 0.5:
            parts.append(
                f"{HEADER}kind: IntegrationSettings\nmetadata:\n  name: image_generation\n"
                f"  namespace: {name}\nspec:\n  overrides:\n    service: runware\n    model: runware:100@1\n"
            )
    return "---\n".join(parts)


def generate(n: int, root: pathlib.Path) -> pathlib.Path:
    if root.exists():
        shutil.rmtree(root)
    (root / "accounts").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "global.yaml", root / "global.yaml")
    rng = random.Random(n)
    for index in range(n):
        path = account_path(root, index)
        if index % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(account_text(index, rng))
    return root


if __name__ == "__main__":
    generate(int(sys.argv[1]), pathlib.Path(sys.argv[2]))
