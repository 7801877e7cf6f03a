"""Read files straight out of downloaded packages: wheels/zips, sdists/npm tarballs, .deb files
and plain directories, through one small interface.

Nothing is unpacked to disk. Members are returned sorted by path so that every extractor sees its
input in the same order on every machine.
"""

from __future__ import annotations

import io
import lzma
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from mixweave.errors import InputError

__all__ = ["Archive", "open_archive", "deb_members", "deb_control_fields"]

PathFilter = Callable[[str], bool]


def deb_members(deb_path: Path) -> dict[str, bytes]:
    """The members of a .deb (an ``ar`` archive): debian-binary, control.tar.*, data.tar.*."""
    members: dict[str, bytes] = {}
    with open(deb_path, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise InputError(f"{deb_path} is not a .deb (ar) archive; delete it and fetch again")
        while True:
            header = handle.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            members[name] = handle.read(size)
            if size % 2:
                handle.read(1)
    return members


def _open_tar_bytes(name: str, data: bytes) -> tarfile.TarFile:
    """Open a (possibly compressed) tar held in memory; zstd needs the ``zstandard`` package."""
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError as exc:  # pragma: no cover - zstandard is a project dependency
            raise InputError(f"{name} is zstd-compressed; pip install zstandard") from exc
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    elif name.endswith(".xz"):
        data = lzma.decompress(data)
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")


def deb_control_fields(deb_path: Path) -> dict[str, str]:
    """Fields of the DEBIAN/control file of a .deb (Package, Version, Architecture, ...)."""
    members = deb_members(deb_path)
    control_name = next((n for n in members if n.startswith("control.tar")), None)
    if control_name is None:
        raise InputError(f"{deb_path} has no control.tar member; delete it and fetch again")
    with _open_tar_bytes(control_name, members[control_name]) as tar:
        for member in tar:
            if member.name.lstrip("./") == "control":
                text = tar.extractfile(member).read().decode("utf-8", "replace")
                break
        else:
            raise InputError(f"{deb_path} has no control file")
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


@dataclass(frozen=True)
class Archive:
    """One package's files, addressed by their path inside the package.

    Paths use '/' and no leading './'. ``.deb`` files expose their data.tar contents
    (``usr/share/...``); npm tarballs keep their ``package/`` prefix.
    """

    path: Path

    def files(self, keep: PathFilter) -> list[tuple[str, bytes]]:
        """All regular files whose path satisfies ``keep``, as ``(path, bytes)`` sorted by path."""
        return sorted(self._iter(keep), key=lambda item: item[0])

    def read(self, member: str) -> bytes:
        """One file's bytes; raises InputError if absent."""
        found = self.files(lambda p: p == member)
        if not found:
            raise InputError(f"{member} not found in {self.path.name}; is the package version right?")
        return found[0][1]

    def names(self) -> list[str]:
        """All regular-file paths, sorted."""
        return sorted(p for p, _ in self._iter(lambda p: True, with_data=False))

    def _iter(self, keep: PathFilter, with_data: bool = True) -> Iterator[tuple[str, bytes]]:
        path = self.path
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    rel = file.relative_to(path).as_posix()
                    if keep(rel):
                        yield rel, file.read_bytes() if with_data else b""
            return
        name = path.name
        if name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if not info.is_dir() and keep(info.filename):
                        yield info.filename, zf.read(info) if with_data else b""
            return
        if name.endswith(".deb"):
            members = deb_members(path)
            data_name = next((n for n in members if n.startswith("data.tar")), None)
            if data_name is None:
                raise InputError(f"{path} has no data.tar member; delete it and fetch again")
            tar = _open_tar_bytes(data_name, members[data_name])
        elif name.endswith((".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar")):
            tar = tarfile.open(path, mode="r:*")
        else:
            raise InputError(f"don't know how to read {path}; expected .whl/.zip/.tar.gz/.tgz/.deb")
        with tar:
            for member in tar:
                if not member.isfile():
                    continue
                rel = member.name[2:] if member.name.startswith("./") else member.name
                if keep(rel):
                    yield rel, tar.extractfile(member).read() if with_data else b""


def open_archive(path: Path | str) -> Archive:
    """An :class:`Archive` over a package file or directory; raises InputError if missing."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; fetch the package first (mixweave corpus build)")
    return Archive(path)
