"""Tenant ids that must be rejected at every entry point."""

HOSTILE_TENANT_IDS = [
    "",
    "Acme",
    "acme|globex",
    "acme,globex",
    "../etc",
    "acme/..",
    "a/b",
    "..",
    "acme corp",
    "-acme",
    "_acme",
    "acme\n",
    "acmé",
    "a" * 64,
    "acme;drop",
    "acme*",
]
