"""The APK manifest reader: package, versionCode and versionName from an APK's binary
AndroidManifest.xml (or a test fake's manifest text). Pure bytes parsing: imports only the stdlib.
"""

from __future__ import annotations

import io
import struct
import zipfile
from typing import Any

FAKE_MANIFEST = "opsrun-fake-manifest.txt"  # the manifest text of the test suite's fake APKs


def apk_info(data: bytes) -> dict[str, Any]:
    """package / version_code / version_name of an APK: from its binary AndroidManifest.xml,
    or from the manifest text the test suite's fake APKs carry. Raises ValueError."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            if "AndroidManifest.xml" in names:
                return parse_axml_manifest(zf.read("AndroidManifest.xml"))
            if FAKE_MANIFEST in names:
                fields = dict(
                    line.split("=", 1)
                    for line in zf.read(FAKE_MANIFEST).decode("utf-8", "replace").splitlines()
                    if "=" in line and not line.startswith("#")
                )
                out: dict[str, Any] = {"package": fields.get("package", "").strip() or None}
                vc = fields.get("versionCode", "").strip()
                out["version_code"] = int(vc) if vc.isdigit() else None
                out["version_name"] = fields.get("versionName", "").strip() or None
                return out
    except zipfile.BadZipFile as exc:
        raise ValueError("not an APK (not a zip archive)") from exc
    raise ValueError("no AndroidManifest.xml inside")


_RES_XML, _STRING_POOL, _RESOURCE_MAP, _START_ELEMENT = 0x0003, 0x0001, 0x0180, 0x0102
_ATTR_VERSION_CODE, _ATTR_VERSION_NAME = 0x0101021B, 0x0101021C
_TYPE_STRING, _TYPE_INT_DEC, _TYPE_INT_HEX = 0x03, 0x10, 0x11
_NO_INDEX = 0xFFFFFFFF


def parse_axml_manifest(buf: bytes) -> dict[str, Any]:
    """Read package, versionCode and versionName from the <manifest> element of Android's
    binary XML (the compiled AndroidManifest.xml). Raises ValueError when it is not one."""
    try:
        if len(buf) < 8 or struct.unpack_from("<H", buf, 0)[0] != _RES_XML:
            raise ValueError("AndroidManifest.xml is not Android binary XML")
        pos = struct.unpack_from("<H", buf, 2)[0]
        strings: list[str] = []
        resids: list[int] = []
        while pos + 8 <= len(buf):
            ctype, hsize, csize = struct.unpack_from("<HHI", buf, pos)
            if csize < 8:
                break
            if ctype == _STRING_POOL:
                strings = _string_pool(buf, pos, hsize)
            elif ctype == _RESOURCE_MAP:
                resids = list(struct.unpack_from(f"<{(csize - hsize) // 4}I", buf, pos + hsize))
            elif ctype == _START_ELEMENT:
                ext = pos + hsize
                _ns, name, attr_start, attr_size, count = struct.unpack_from("<IIHHH", buf, ext)
                if name < len(strings) and strings[name] == "manifest":
                    return _manifest_attrs(buf, ext + attr_start, attr_size, count, strings, resids)
            pos += csize
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"AndroidManifest.xml is damaged ({exc})") from exc
    raise ValueError("AndroidManifest.xml has no <manifest> element")


def _string_pool(buf: bytes, pos: int, hsize: int) -> list[str]:
    count, _styles, flags, start = struct.unpack_from("<IIII", buf, pos + 8)
    utf8 = bool(flags & 0x100)
    out = []
    for i in range(count):
        (offset,) = struct.unpack_from("<I", buf, pos + hsize + 4 * i)
        p = pos + start + offset
        if utf8:
            p += 2 if buf[p] & 0x80 else 1  # length in UTF-16 units (skipped)
            n = buf[p]
            if n & 0x80:
                n = ((n & 0x7F) << 8) | buf[p + 1]
                p += 1
            p += 1
            out.append(buf[p : p + n].decode("utf-8", "replace"))
        else:
            (n,) = struct.unpack_from("<H", buf, p)
            p += 2
            if n & 0x8000:
                n = ((n & 0x7FFF) << 16) | struct.unpack_from("<H", buf, p)[0]
                p += 2
            out.append(buf[p : p + 2 * n].decode("utf-16-le", "replace"))
    return out


def _manifest_attrs(
    buf: bytes, at: int, size: int, count: int, strings: list[str], resids: list[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {"package": None, "version_code": None, "version_name": None}
    for i in range(count):
        _ns, name, raw, _vsize, _res0, dtype, data = struct.unpack_from("<IIIHBBI", buf, at + i * size)
        key = strings[name] if name < len(strings) else ""
        rid = resids[name] if name < len(resids) else 0
        text = strings[raw] if raw != _NO_INDEX and raw < len(strings) else None
        if text is None and dtype == _TYPE_STRING and data < len(strings):
            text = strings[data]
        if key == "package":
            out["package"] = text
        elif rid == _ATTR_VERSION_CODE or key == "versionCode":
            if dtype in (_TYPE_INT_DEC, _TYPE_INT_HEX):
                out["version_code"] = data
            elif text and text.strip().isdigit():
                out["version_code"] = int(text)
        elif rid == _ATTR_VERSION_NAME or key == "versionName":
            out["version_name"] = text if text is not None else str(data)
    return out
