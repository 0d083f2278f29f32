"""Pointing clients at the intercept listener: the PAC file, and
`governor setup --proxy <tool>`.

The PAC file sends only the decrypted LLM hosts to the proxy and everything
else DIRECT, so an MDM that sets it as the system proxy changes nothing for
other traffic. `setup --proxy` scopes the proxy to one tool: a shell function
of the tool's name that runs it with HTTPS_PROXY and the CA variables set,
between markers in the shell rc file (the same markers `governor setup` uses,
so `--undo` takes exactly that block out again).
"""

from __future__ import annotations

import json
from pathlib import Path

from agent import toolsetup
from agent.trustca import CaFiles, runtime_env

# The command each tool is started with.
PROXY_TOOLS = {"aider": "aider", "claude": "claude", "codex": "codex", "gemini": "gemini", "opencode": "opencode"}


def pac(proxy: str, hosts: list[str] | tuple[str, ...]) -> str:
    tests = []
    for host in hosts:
        host = host.lower().strip()
        if host.startswith("*."):
            tests.append(f"dnsDomainIs(host, {json.dumps(host[1:])})")
        else:
            tests.append(f"host == {json.dumps(host)}")
    condition = "\n      || ".join(tests) or "false"
    return (
        "// Governor: LLM provider hosts through the local agent, everything else direct.\n"
        "function FindProxyForURL(url, host) {\n"
        "  host = host.toLowerCase();\n"
        f"  if ({condition})\n"
        f'    return "PROXY {proxy}";\n'
        '  return "DIRECT";\n'
        "}\n"
    )


def _rc_path(home: Path, env: dict[str, str]) -> tuple[Path, bool]:
    shell = Path(env.get("SHELL", "/bin/bash")).name
    if shell == "fish":
        return home / ".config" / "fish" / "conf.d" / "governor-proxy.fish", True
    return home / {"zsh": ".zshrc", "bash": ".bashrc"}.get(shell, ".profile"), False


def proxy_block(tool: str, proxy_url: str, files: CaFiles, fish: bool) -> str:
    command = PROXY_TOOLS[tool]
    variables = {"HTTPS_PROXY": proxy_url, "https_proxy": proxy_url, **runtime_env(files)}
    header = f"# added by `governor setup --proxy {tool}`; remove with `governor setup --proxy {tool} --undo`\n"
    if fish:
        assigns = " ".join(f"{k}={json.dumps(v)}" for k, v in variables.items())
        return header + f"function {command}\n    env {assigns} command {command} $argv\nend"
    assigns = " ".join(f"{k}={json.dumps(v)}" for k, v in variables.items())
    return header + f'{command}() {{ {assigns} command {command} "$@"; }}'


def setup_proxy(tool: str, home: Path, env: dict[str, str], proxy_url: str, files: CaFiles, undo: bool = False) -> list[str]:
    """Add (or with `undo` remove) the tool's proxy function; returns what changed."""
    if tool not in PROXY_TOOLS:
        raise toolsetup.SetupError(
            f"--proxy is for command-line tools ({', '.join(sorted(PROXY_TOOLS))}); "
            "for Cursor set the system proxy to the PAC file (`governor pac`)"
        )
    path, fish = _rc_path(home, env)
    name = f"{tool}-proxy"
    current = path.read_text() if path.exists() else None
    if undo:
        if current is None:
            return []
        new: str | None = toolsetup.remove_block(current, name) or None
    else:
        new = toolsetup.put_block(current or "", name, proxy_block(tool, proxy_url, files, fish))
    if new == current:
        return []
    if new is None:
        path.unlink()
        return [f"removed {path}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
    return [f"updated {path}"]
