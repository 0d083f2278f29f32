#!/usr/bin/env python3
"""Write the WiX fragment listing every file of the runtime folder
(ComponentGroup "Runtime" under INSTALLDIR), for wixl.

    python3 wxs_runtime.py <runtime-dir> > runtime.wxs

Like `wixl-heat`, but deterministic: ids and component GUIDs derive from the
relative path (uuid5), so a file keeps its component across versions, and
files at the top of the folder need no "." directory. Sources are relative to
<runtime-dir>'s parent, where build-msi.sh runs wixl (wixl wants relative
paths).
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from pathlib import Path
from xml.sax.saxutils import quoteattr

NAMESPACE = uuid.UUID("6B1F3C2E-8D4A-4E59-9C1B-2A7E5D0F4C31")  # the MSI's UpgradeCode


def _id(prefix: str, rel: str) -> str:
    return prefix + hashlib.sha1(rel.encode()).hexdigest()[:32].upper()


def fragment(runtime: Path) -> str:
    components: list[str] = []
    lines = ['<?xml version="1.0" encoding="utf-8"?>', '<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">', "  <Fragment>"]

    def walk(directory: Path, indent: str) -> None:
        for path in sorted(directory.iterdir()):
            rel = path.relative_to(runtime).as_posix()
            if path.is_dir():
                lines.append(f"{indent}<Directory Id={quoteattr(_id('d', rel))} Name={quoteattr(path.name)}>")
                walk(path, indent + "  ")
                lines.append(f"{indent}</Directory>")
                continue
            cid, guid = _id("c", rel), str(uuid.uuid5(NAMESPACE, rel)).upper()
            # The two executables keep readable file ids (handy in msiinfo and logs).
            fid = path.name if rel in ("governor.exe", "governorw.exe") else _id("f", rel)
            source = f"{runtime.name}/{rel}"
            lines.append(
                f'{indent}<Component Id={quoteattr(cid)} Guid="{guid}" Win64="yes">'
                f"<File Id={quoteattr(fid)} Name={quoteattr(path.name)} KeyPath=\"yes\" Source={quoteattr(source)}/></Component>"
            )
            components.append(cid)

    lines.append('    <DirectoryRef Id="INSTALLDIR">')
    walk(runtime, "      ")
    lines += ["    </DirectoryRef>", "  </Fragment>", "  <Fragment>", '    <ComponentGroup Id="Runtime">']
    lines += [f"      <ComponentRef Id={quoteattr(c)}/>" for c in components]
    lines += ["    </ComponentGroup>", "  </Fragment>", "</Wix>", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(fragment(Path(sys.argv[1]).absolute()))
