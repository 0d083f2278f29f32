"""The version every response carries in `X-Langwatch-Gateway-Version`.

Installers stamp a build into `GOVERNOR_BUILD_VERSION` at packaging time
(PyInstaller bakes `agent/_build.py`); a source checkout reports the package
version.
"""

from __future__ import annotations

from importlib import metadata


def _version() -> str:
    try:
        from agent import _build  # type: ignore[attr-defined]

        return str(_build.VERSION)
    except ImportError:
        pass
    try:
        return metadata.version("governor")
    except metadata.PackageNotFoundError:
        return "dev"


VERSION = _version()
