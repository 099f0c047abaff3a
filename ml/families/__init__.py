"""The five model families, one protocol (see base.py). Adding a family is one module and one line here."""

from __future__ import annotations

import importlib

FAMILY_MODULES: dict[str, str] = {
    "bandit": "ml.families.bandit",
    "ranker": "ml.families.ranker",
    "conversion": "ml.families.conversion",
    "q2e": "ml.families.q2e",
    "attributes": "ml.families.attributes",
}


def get_family(name: str):
    """Return the family object (``FAMILY``) of a module, importing it lazily."""
    if name not in FAMILY_MODULES:
        raise ValueError(f"unknown model family {name!r}; expected one of {', '.join(FAMILY_MODULES)}")
    return importlib.import_module(FAMILY_MODULES[name]).FAMILY
