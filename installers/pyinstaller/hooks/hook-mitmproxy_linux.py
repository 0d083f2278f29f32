# Overrides mitmproxy_rs's hook: the module stays (mitmproxy_rs imports it),
# its OS redirector for mitmproxy's "local" capture mode does not. Governor
# runs reverse/regular proxy modes only, and the redirector is a privileged
# helper we have no reason to ship.
binaries: list[tuple[str, str]] = []
datas: list[tuple[str, str]] = []
