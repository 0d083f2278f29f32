"""Load only the mitmproxy addons the gateway uses.

Importing any `mitmproxy.addons.<name>` first runs that package's `__init__`,
which imports every default addon of the mitmproxy tools (flask for the
onboarding app, ldap3 for proxy auth, …): about 13 MiB and 0.7 s at start-up
that the gateway never uses. Registering the package without running its
`__init__` lets the five addons `agent.daemon` loads import on their own.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def skip_default_addons() -> None:
    """Call before anything imports `mitmproxy.addons`; a no-op once it is imported."""
    if "mitmproxy.addons" in sys.modules:
        return
    spec = importlib.util.find_spec("mitmproxy.addons")
    if spec is None or spec.submodule_search_locations is None:
        return  # an unusual install: import it the ordinary way
    package = types.ModuleType("mitmproxy.addons")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__package__ = "mitmproxy.addons"
    sys.modules["mitmproxy.addons"] = package
