"""The prefix registry: which folder prefix names which data domain.

Numbered folders (``1``, ``2``, ...) are always the ``main`` domain; typed folders are ``<prefix><n>``
(``c1`` is code shard 1). Configs extend the registry (``s`` -> ``science``) without editing code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from midtrain.errors import ConfigError, Problems, did_you_mean

MAIN_DOMAIN = "main"

DEFAULT_PREFIXES: dict[str, str] = {
    "c": "code",
    "m": "math",
    "i": "instruct",
    "q": "qa",
    "b": "books",
    "n": "news",
    "p": "papers",
    "w": "web",
}

_PREFIX_RE = re.compile(r"^[a-z]+$")
_DOMAIN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
PREFIXES_FLAG = "--data.domain_prefixes"


@dataclass(frozen=True)
class DomainRegistry:
    """Maps folder prefixes to domain names; ``main`` is implicit (numbered folders)."""

    prefixes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PREFIXES))

    @classmethod
    def with_extra(cls, extra: Mapping[str, str] | None) -> DomainRegistry:
        """The default registry plus ``extra`` (prefix -> domain) from the config, validated."""
        prefixes = dict(DEFAULT_PREFIXES)
        problems = Problems()
        for prefix, domain in (extra or {}).items():
            if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
                problems.add(
                    f"{PREFIXES_FLAG} has prefix {prefix!r}, which is not lowercase letters only. "
                    "Use a prefix like 's' so that folders are named 's1', 's2', ..."
                )
                continue
            if not isinstance(domain, str) or not _DOMAIN_RE.match(domain) or domain == MAIN_DOMAIN:
                problems.add(
                    f"{PREFIXES_FLAG} maps prefix {prefix!r} to {domain!r}, which is not a valid domain name. "
                    "Use a name of letters, digits, '_' or '-' other than 'main', e.g. {s: science}."
                )
                continue
            if prefix in prefixes and prefixes[prefix] != domain:
                problems.add(
                    f"{PREFIXES_FLAG} maps prefix {prefix!r} to {domain!r}, but {prefix!r} already means "
                    f"{prefixes[prefix]!r}. Pick another prefix for {domain!r}."
                )
                continue
            owner = next((p for p, d in prefixes.items() if d == domain and p != prefix), None)
            if owner is not None:
                problems.add(
                    f"{PREFIXES_FLAG} maps prefix {prefix!r} to {domain!r}, which prefix {owner!r} already names. "
                    "One domain has one prefix; rename the folders or the domain."
                )
                continue
            prefixes[prefix] = domain
        problems.raise_if_any(ConfigError)
        return cls(prefixes)

    def domains(self) -> list[str]:
        """Every known domain, ``main`` first, then in registry order."""
        return [MAIN_DOMAIN, *self.prefixes.values()]

    def domain_of_prefix(self, prefix: str) -> str | None:
        return self.prefixes.get(prefix)

    def check_domain(self, domain: str, flag: str) -> str | None:
        """None if ``domain`` is known, else the error message for it."""
        if domain in self.domains():
            return None
        known = ", ".join(self.domains())
        return (
            f"{flag} names domain {domain!r}, which is not a known domain (known: {known})."
            f"{did_you_mean(domain, self.domains())} To add a domain, register its folder prefix with "
            f"{PREFIXES_FLAG} (e.g. '{{s: science}}')."
        )
