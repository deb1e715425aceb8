"""The two forms a project file comes in: plain JSON, or the binary ``.sue`` container.

The container is a 4-byte little-endian length N, N bytes of UTF-8 JSON, then the raw
bytes of each embedded file back to back in ``filesMeta`` order, each
``filesMeta[i].size`` bytes long. Anything that does not add up exactly is rejected:
a render from a half-uploaded file would quietly be wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import msgspec

from rendermill.common import errors
from rendermill.common.project import model

_HEADER = struct.Struct("<I")
_BOM = b"\xef\xbb\xbf"
# How far into the data to look for the opening brace of plain JSON.
_SNIFF = 1 << 16


def split(data: bytes) -> tuple[bytes, list[model.EmbeddedFile]]:
    """Separate the project JSON from the embedded files.

    For plain JSON (the data starts with ``{`` after optional whitespace) the caller gets
    ``(data, [])``, minus a UTF-8 byte order mark if there was one. For a container it
    gets the JSON bytes and one ``EmbeddedFile`` per ``filesMeta`` entry, whose
    ``offset`` is absolute in ``data``. The JSON of a plain file is not decoded here.
    ``data`` may be an ``mmap`` of a spooled upload (only slices of it are copied).

    Raises ``errors.InvalidProject`` when the data is too short, the header promises
    more JSON than there is, the container's JSON does not decode or has a malformed
    ``filesMeta``, an embedded file is cut short, or bytes are left over after the last
    embedded file.
    """
    if _is_plain_json(data):
        return (data[len(_BOM) :] if data[: len(_BOM)] == _BOM else data), []
    if len(data) < _HEADER.size:
        raise _invalid(
            "",
            f"not a project file: {len(data)} bytes is neither JSON (which starts with "
            "'{') nor a .sue container (which starts with a 4-byte length)",
        )
    (json_size,) = _HEADER.unpack_from(data)
    json_end = _HEADER.size + json_size
    if json_end > len(data):
        raise _invalid(
            "",
            f"truncated container: header says {json_size} bytes of JSON but only "
            f"{len(data) - _HEADER.size} follow (the file is neither plain JSON, which "
            "starts with '{', nor a complete .sue container)",
        )
    json_bytes = data[_HEADER.size : json_end]
    try:
        header = msgspec.json.decode(json_bytes)
    except msgspec.DecodeError as exc:
        raise _invalid(
            "", f"the container's JSON (bytes 4 to {json_end}) does not decode: {exc}"
        ) from exc
    if not isinstance(header, dict):
        raise _invalid("", f"the container's JSON must be an object, got {_kind(header)}")
    entries = _files_meta(header.get("filesMeta"))
    return json_bytes, _place(data, json_end, entries)


def build(project_json: bytes, files: Sequence[tuple[str, str, bytes]]) -> bytes:
    """Return a ``.sue`` container holding ``project_json`` and ``files``.

    ``files`` are ``(name, type, content)`` in the order they are stored. The JSON's
    ``filesMeta`` is rewritten to describe exactly these files, so the result always
    splits cleanly. Raises ``ValueError`` if ``project_json`` is not a JSON object.
    """
    document = msgspec.json.decode(project_json)
    if not isinstance(document, dict):
        raise ValueError(f"project JSON must be an object, got {_kind(document)}")
    document["filesMeta"] = [
        {"name": name, "size": len(content), "type": type_} for name, type_, content in files
    ]
    encoded = msgspec.json.encode(document)
    if len(encoded) > 0xFFFFFFFF:
        raise ValueError("project JSON is too large for a .sue container (4 GiB at most)")
    return b"".join([_HEADER.pack(len(encoded)), encoded, *(content for _, _, content in files)])


def _is_plain_json(data: bytes) -> bool:
    # Only a prefix is looked at, so a large mmap'd container is never copied whole.
    head = data[: len(_BOM) + _SNIFF]
    body = head[len(_BOM) :] if head[: len(_BOM)] == _BOM else head
    if not body.lstrip().startswith(b"{"):
        return False
    # A container whose length has '{' or whitespace as its low byte (1403 bytes of JSON
    # is 7b 05 00 00) passes the test above too. Plain JSON never has a header that fits:
    # its bytes 1..3 are all >= 0x09, which reads as a length of at least 151 MB.
    return not _header_fits(data)


def _header_fits(data: bytes) -> bool:
    if len(data) < _HEADER.size:
        return False
    (json_size,) = _HEADER.unpack_from(data)
    json_end = _HEADER.size + json_size
    return json_end <= len(data) and data[_HEADER.size : json_end].lstrip().startswith(b"{")


def _files_meta(meta: object) -> list[tuple[str, int, str]]:
    """Validate ``filesMeta``; the caller gets ``(name, size, type)`` per entry."""
    if meta is None:
        return []
    if not isinstance(meta, list):
        raise _invalid(
            "filesMeta", f"must be a list of {{name, size, type}} objects, got {_kind(meta)}"
        )
    problems: list[errors.Problem] = []
    entries: list[tuple[str, int, str]] = []
    for i, entry in enumerate(meta):
        path = f"filesMeta[{i}]"
        if not isinstance(entry, dict):
            problems.append(
                errors.Problem(path, f"must be a {{name, size, type}} object, got {_kind(entry)}")
            )
            continue
        name, size, type_ = entry.get("name"), entry.get("size"), entry.get("type")
        if isinstance(size, float) and size.is_integer():
            size = int(size)
        before = len(problems)
        if not isinstance(name, str) or not name:
            problems.append(
                errors.Problem(f"{path}.name", f"must be the file's name, got {_kind(name)}")
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            problems.append(
                errors.Problem(
                    f"{path}.size",
                    f"must be the file's length in bytes (a whole number >= 0), got {_kind(size)}",
                )
            )
        if type_ is not None and not isinstance(type_, str):
            problems.append(
                errors.Problem(f"{path}.type", f"must be a MIME type string, got {_kind(type_)}")
            )
        if len(problems) == before and isinstance(name, str) and isinstance(size, int):
            entries.append((name, size, type_ if isinstance(type_, str) else ""))
    if problems:
        raise errors.InvalidProject(problems)
    return entries


def _place(
    data: bytes, start: int, entries: list[tuple[str, int, str]]
) -> list[model.EmbeddedFile]:
    files: list[model.EmbeddedFile] = []
    offset = start
    for i, (name, size, type_) in enumerate(entries):
        end = offset + size
        if end > len(data):
            later = sum(1 for _, later_size, _ in entries[i + 1 :] if later_size)
            and_later = f"; the {later} file(s) after it are missing entirely" if later else ""
            raise _invalid(
                f"filesMeta[{i}]",
                f"truncated container: embedded file {name!r} is cut short by "
                f"{end - len(data)} bytes (filesMeta says {size} bytes at offset {offset}, "
                f"only {len(data) - offset} remain){and_later}",
            )
        files.append(model.EmbeddedFile(name=name, size=size, type=type_, offset=offset))
        offset = end
    if offset != len(data):
        described = offset - start
        present = len(data) - start
        raise _invalid(
            "filesMeta",
            f"inconsistent container: filesMeta sizes add up to {described} bytes but "
            f"{present} bytes follow the JSON ({present - described} unaccounted for)",
        )
    return files


def _invalid(path: str, message: str) -> errors.InvalidProject:
    return errors.InvalidProject([errors.Problem(path, message)])


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and abs(value) >= 10**20:
        return "a number too large to use"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"
