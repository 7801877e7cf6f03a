"""Stage manifests and atomic stage outputs (the stage contract of DESIGN.md).

A stage writes everything into a hidden temporary sibling folder, writes ``_manifest.json`` last
(itself by temp file + ``os.replace``), and only then renames the folder into place. A reader
therefore sees either the previous complete artifact or the new complete one, never a partial one;
a killed stage leaves only a ``.<name>.tmp-*`` folder that the next run deletes.

The manifest records the stage's config, a ``fingerprint`` (sha256 over stage name, stage
version, config and the sha256 of every input manifest), package version and git commit, counts,
drops by reason, timings, and every output file with ``bytes`` and ``sha256``. A stage whose
stored fingerprint equals the new one is skipped. :func:`verify_stage` re-hashes every listed file
and refuses paths that escape the artifact's root.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError, ManifestError

MANIFEST_NAME = "_manifest.json"
SCHEMA_VERSION = 1


def sha256_file(path: str | os.PathLike) -> str:
    return _hash_and_find(Path(path), None)[0]


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no NaN, compact separators (used for hashing)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text through a temp file, fsync and ``os.replace``: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, value: Any, *, indent: int = 2) -> None:
    """Write JSON (sorted keys, no NaN) atomically with :func:`write_text_atomic`."""
    text = json.dumps(value, indent=indent, sort_keys=True, allow_nan=False, ensure_ascii=False)
    write_text_atomic(path, text + "\n")


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The git commit of the mixweave checkout, or None when not run from a git work tree."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def fingerprint(stage: str, stage_version: int, config: Any, input_sha256: dict[str, str]) -> str:
    payload = {"stage": stage, "stage_version": stage_version, "config": config, "inputs": input_sha256}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


TMP_MARK = ".tmp-"


def _hash_and_find(path: Path, needle: bytes | None) -> tuple[str, bool]:
    """sha256 of a file and whether ``needle`` occurs in it, in one streaming pass."""
    digest = hashlib.sha256()
    found = False
    tail = b""
    keep = len(needle) - 1 if needle else 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            if needle and not found:
                window = tail + block
                found = needle in window
                tail = window[-keep:] if keep else b""
    return digest.hexdigest(), found


def list_output_files(root: Path) -> list[dict]:
    """Every regular file under ``root`` except the manifest, sorted, with bytes and sha256.

    When ``root`` is a stage's temporary folder (``.<name>.tmp-<hex>``), every file is also searched
    for that folder's name in the same pass: an artifact that names its temporary location would
    point at a folder that no longer exists once the stage commits, so that raises ManifestError.
    Symbolic links are refused: an artifact holds its own bytes."""
    needle = root.name.encode() if root.name.startswith(".") and TMP_MARK in root.name else None
    files = []
    for path in sorted(p for p in root.rglob("*") if p.name != MANIFEST_NAME and (p.is_file() or p.is_symlink())):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ManifestError(f"stage output {rel} is a symbolic link; a stage must write its own files")
        sha, leaked = _hash_and_find(path, needle)
        if leaked:
            raise ManifestError(
                f"stage output {rel} names the stage's temporary folder {root.name}, which is renamed away when "
                "the stage commits; write the artifact's final path instead (this is a bug in mixweave)")
        files.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha})
    return files


def build_manifest(
    *,
    stage: str,
    stage_version: int,
    config: Any,
    fingerprint_value: str,
    inputs: dict[str, dict],
    root: Path,
    counts: dict | None = None,
    drops: dict | None = None,
    timings: dict | None = None,
    extra: dict | None = None,
) -> dict:
    from .. import __version__

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "stage_version": stage_version,
        "config": config,
        "fingerprint": fingerprint_value,
        "inputs": inputs,
        "package": {"name": "mixweave", "version": __version__, "git_commit": git_commit()},
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "counts": counts or {},
        "drops": drops or {},
        "timings": timings or {},
        "files": list_output_files(root),
    }
    if extra:
        manifest.update(extra)
    return manifest


def manifest_sha256(artifact: str | os.PathLike) -> str:
    return sha256_file(Path(artifact) / MANIFEST_NAME)


def read_manifest(artifact: str | os.PathLike) -> dict | None:
    """The artifact's manifest, or None when the stage never completed there."""
    path = Path(artifact) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); delete {Path(artifact)} and re-run its stage") from exc
    if not isinstance(manifest, dict) or "stage" not in manifest or "files" not in manifest:
        raise ManifestError(f"{path} is not a mixweave stage manifest; delete {Path(artifact)} and re-run its stage")
    return manifest


def require_manifest(artifact: str | os.PathLike, stage_hint: str) -> dict:
    manifest = read_manifest(artifact)
    if manifest is None:
        raise ManifestError(f"{artifact} has no {MANIFEST_NAME}: run the {stage_hint} stage first")
    return manifest


def _safe_member(root: Path, rel: str) -> Path:
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise ManifestError(f"manifest of {root} lists {rel!r}, which is not a relative path; refusing to read it")
    resolved = (root / rel).resolve()
    if root.resolve() not in resolved.parents:
        raise ManifestError(f"manifest of {root} lists {rel!r}, which escapes the artifact folder; refusing to read it")
    return resolved


def verify_stage(artifact: str | os.PathLike) -> dict:
    """Re-hash every file the manifest lists; raise ManifestError naming the first mismatch."""
    root = Path(artifact)
    manifest = require_manifest(root, "producing")
    problems = []
    listed = {entry.get("path") for entry in manifest["files"]}
    for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(root).as_posix()
        if path.name != MANIFEST_NAME and rel not in listed:  # nested artifacts' manifests are not listed
            problems.append(f"{rel} is not listed in the manifest (added after the stage wrote it)")
    for entry in manifest["files"]:
        path = _safe_member(root, entry.get("path"))
        if not path.is_file():
            problems.append(f"{entry['path']} is missing")
        elif path.stat().st_size != entry.get("bytes"):
            problems.append(f"{entry['path']} has {path.stat().st_size} bytes, manifest says {entry.get('bytes')}")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{entry['path']} sha256 differs from the manifest")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ManifestError(
            f"{root}: {problems[0]}{more}; the artifact was altered after it was written -- re-run its stage"
        )
    return manifest


def artifact_files(artifact: str | os.PathLike, suffix: str = "") -> list[Path]:
    """Files listed in a completed artifact's manifest (optionally filtered by suffix), in order."""
    root = Path(artifact)
    manifest = require_manifest(root, "producing")
    return [_safe_member(root, e["path"]) for e in manifest["files"] if e["path"].endswith(suffix)]


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_name(name: Any, what: str, error: type[Exception] = InputError) -> str:
    """A name that becomes a path component (a source, a format): 1-100 letters, digits, '_', '.',
    '-', starting with a letter or digit -- so never '', '.', '..', a hidden file or a separator."""
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise error(f"{what} {name!r}: use 1-100 letters, digits, '_', '.' or '-', starting with a letter "
                            "or digit (it becomes a folder or file name)")
    return name


def read_listed_file(artifact: str | os.PathLike, rel: str) -> bytes:
    """The bytes of ``rel`` inside a completed artifact, checked against the size and sha256 that its
    manifest lists: a file edited by hand after its stage wrote it is refused, not silently used."""
    root = Path(artifact)
    manifest = require_manifest(root, "producing")
    entry = next((e for e in manifest["files"] if e.get("path") == rel), None)
    if entry is None:
        raise ManifestError(f"{root} lists no {rel} in its {MANIFEST_NAME}; re-run its stage")
    data = _safe_member(root, rel).read_bytes()
    if len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise ManifestError(f"{root / rel} was changed after its stage wrote it (sha256 differs from the manifest); "
                            "re-run the stage (or --force it) instead of editing its output")
    return data


_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on ``folder`` while mixweave writes into it.

    A second process that wants to write the same run folder fails at once with a clear message
    instead of deleting the first one's temporary stage folders. Re-entrant inside one process (the
    runner holds the run folder for the whole run; each stage commit takes it again)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ManifestError(f"{folder} exists and is not a folder; choose another output path (--out)") from None
    except OSError as exc:
        raise ManifestError(f"cannot create output folder {folder} ({exc.strerror}); choose another --out") from None
    key = os.path.realpath(folder)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
        else:
            fd = os.open(key, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ManifestError(f"{folder} is being written by another mixweave process; wait for it to finish "
                                    "or write elsewhere (--out)") from None
            _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        with _HELD_GUARD:
            held = _HELD[key]
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                fcntl.flock(held[0], fcntl.LOCK_UN)
                os.close(held[0])


def refuse_foreign_folder(final: Path) -> None:
    """Never replace what mixweave did not create: ``final`` must be absent, empty, or an artifact."""
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise ManifestError(f"{final} exists and is not a folder; choose another output path (--out) or remove it")
    if final.is_dir() and not (final / MANIFEST_NAME).is_file() and any(final.iterdir()):
        raise ManifestError(f"{final} already holds files that mixweave did not write (no {MANIFEST_NAME}); "
                            "choose another output path (--out) or empty it yourself")


def clean_stale_temporaries(parent: Path, name: str) -> None:
    for stale in parent.glob(f".{name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in parent.glob(f".{name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike, *, require: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final`` in one rename.

    The one place in mixweave that renames an artifact folder into place (stage artifacts, nested
    export folders, trainer checkpoints; the encoder-export cache, whose concurrent builders race and
    keep the first, renames its own: ``retrieval/encoder_backends.py``). ``require``: a file the folder
    must hold before it is committed (a stage's manifest). On an exception the temporary folder is removed and ``final`` is untouched.
    Cost: two renames and, when ``final`` existed, one ``rmtree`` of the old copy.
    """
    final = Path(final)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        if require is not None and not (tmp / require).is_file():
            raise RuntimeError(f"stage wrote no {require} into {tmp}")
        if final.exists():
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_stage_dir(final: str | os.PathLike) -> Iterator[Path]:
    """The stage-commit helper: yield a temporary folder that replaces ``final`` in one rename once
    the caller has written its files and, last, its manifest (:func:`write_json_atomic`).

    Refuses a ``final`` that mixweave did not write, holds the parent folder's lock (one writer),
    and clears temporaries a crashed run of this artifact left. The caller writes under the
    temporary folder but must name ``final`` in every file: an output naming the temporary folder
    is refused when the manifest lists it (:func:`list_output_files`)."""
    final = Path(final)
    refuse_foreign_folder(final)
    with hold_folder(final.parent):
        clean_stale_temporaries(final.parent, final.name)
        with atomic_folder(final, require=MANIFEST_NAME) as tmp:
            yield tmp
            refuse_foreign_folder(final)
