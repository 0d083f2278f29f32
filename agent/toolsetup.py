"""`governor setup <tool> [--undo]`: the persistent variant of the wrappers,
for people who start their tool directly.

Every change is a block between markers (shell rc, Codex's config.toml) or a
few keys in a JSON settings file (Gemini, opencode). The key itself is never
written to a file: rc lines read it with `governor key` at shell start, and
config files name the `GOVERNOR_LOCAL_KEY` variable those lines export.

Undo is exact: before the first change, the original bytes of every file are
kept in `<data_dir>/setup/<tool>.json`; `--undo` puts them back when the file
still holds what setup wrote, and otherwise removes only what setup added
(marker blocks, the JSON keys it set) so later edits by the user survive.
Running setup twice changes nothing the second time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import wrappers

BEGIN = "# >>> governor {name} >>>"
END = "# <<< governor {name} <<<"
SETUP_TOOLS = ("aider", "claude", "codex", "cursor", "gemini", "opencode")
# JSON files: the dotted key paths setup sets, so undo can remove just those.
MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Context:
    home: Path
    env: dict[str, str]
    data_dir: Path
    base_url: str
    governor: str  # how rc lines call `governor` (absolute path when known)


# -- marker blocks --------------------------------------------------------------


def block(name: str, body: str) -> str:
    return f"{BEGIN.format(name=name)}\n{body.rstrip()}\n{END.format(name=name)}\n"


def _block_pattern(name: str) -> re.Pattern[str]:
    begin, end = re.escape(BEGIN.format(name=name)), re.escape(END.format(name=name))
    return re.compile(rf"(\n?){begin}\n.*?{end}\n?", re.S)


def put_block(text: str, name: str, body: str, at_start: bool = False) -> str:
    """`text` with the block present exactly once (replaced in place if already there)."""
    new = block(name, body)
    pattern = _block_pattern(name)
    match = pattern.search(text)
    if match:
        return text[: match.start()] + match.group(1) + new + text[match.end():]
    if at_start:
        return new + text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text else "") + new


def remove_block(text: str, name: str) -> str:
    """Inverse of `put_block` for a block appended to a file (the blank line before it goes too)."""
    return _block_pattern(name).sub("", text, count=1)


# -- per-file edits ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Edit:
    path: Path
    apply: Callable[[str | None], str]  # current text (None: absent) → new text
    revert: Callable[[str], str | None]  # current text → text without our change (None: delete)


def rc_edit(ctx: Context, tool: str, lines: dict[str, str | None]) -> Edit:
    """Shell lines for the user's login shell; `None` values are unset."""
    shell = Path(ctx.env.get("SHELL", "/bin/bash")).name
    if shell == "fish":
        path = ctx.home / ".config" / "fish" / "conf.d" / "governor.fish"
        body = [f"set -e {k}" if v is None else f"set -gx {k} {v}" for k, v in lines.items()]
    else:
        path = ctx.home / {"zsh": ".zshrc", "bash": ".bashrc"}.get(shell, ".profile")
        body = [f"unset {k}" if v is None else f"export {k}={v}" for k, v in lines.items()]
    text = f"# added by `governor setup {tool}`; remove with `governor setup {tool} --undo`\n" + "\n".join(body)
    name = tool
    return Edit(path, lambda cur: put_block(cur or "", name, text), lambda cur: remove_block(cur, name) or None)


def _key_expr(ctx: Context) -> str:
    return f'"$({ctx.governor} key)"'


def _get_path(data: dict[str, Any], dotted: tuple[str, ...]) -> Any:
    node: Any = data
    for part in dotted:
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def _set_path(data: dict[str, Any], dotted: tuple[str, ...], value: Any) -> None:
    node = data
    for part in dotted[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is MISSING:
        node.pop(dotted[-1], None)
    else:
        node[dotted[-1]] = value


def _prune_empty(data: dict[str, Any], dotted: tuple[str, ...]) -> None:
    for depth in range(len(dotted) - 1, 0, -1):
        parent = _get_path(data, dotted[: depth - 1]) if depth > 1 else data
        child = parent.get(dotted[depth - 1]) if isinstance(parent, dict) else None
        if isinstance(child, dict) and not child:
            parent.pop(dotted[depth - 1])


def json_edit(path: Path, values: dict[tuple[str, ...], Any], originals: dict[str, Any]) -> Edit:
    """Set dotted keys in a JSON file; `originals` (filled on apply) lets revert put old values back."""

    def apply(current: str | None) -> str:
        data = json.loads(current) if current and current.strip() else {}
        if not isinstance(data, dict):
            raise SetupError(f"{path} does not hold a JSON object; fix it by hand first")
        for dotted, value in values.items():
            key = ".".join(dotted)
            if key not in originals:
                before = _get_path(data, dotted)
                originals[key] = {"absent": True} if before is MISSING else {"value": before}
            _set_path(data, dotted, value)
        return json.dumps(data, indent=2) + "\n"

    def revert(current: str) -> str | None:
        data = json.loads(current) if current.strip() else {}
        for dotted in values:
            saved = originals.get(".".join(dotted), {"absent": True})
            _set_path(data, dotted, MISSING if saved.get("absent") else saved["value"])
            _prune_empty(data, dotted)
        return json.dumps(data, indent=2) + "\n" if data else None

    return Edit(path, apply, revert)


class SetupError(Exception):
    """Setup cannot proceed safely; the message says what to fix."""


# -- per tool ------------------------------------------------------------------


def codex_home(ctx: Context) -> Path:
    return Path(ctx.env["CODEX_HOME"]) if ctx.env.get("CODEX_HOME") else ctx.home / ".codex"


def codex_edits(ctx: Context, originals: dict[str, Any]) -> list[Edit]:
    provider = (
        f"[model_providers.{wrappers.CODEX_PROVIDER}]\n"
        'name = "Governor"\n'
        f'base_url = "{ctx.base_url}/v1"\n'
        'wire_api = "responses"\n'
        f'env_key = "{wrappers.KEY_VARIABLE}"\n\n'
        f"[profiles.{wrappers.CODEX_PROVIDER}]\n"
        f'model_provider = "{wrappers.CODEX_PROVIDER}"\n'
    )

    def apply(current: str | None) -> str:
        text = current or ""
        parsed = tomllib.loads(remove_block(remove_block(text, "codex-profile"), "codex"))
        if wrappers.CODEX_PROVIDER in (parsed.get("model_providers") or {}):
            raise SetupError("config.toml already defines [model_providers.governor] outside governor's block")
        text = put_block(text, "codex", provider)
        if "profile" not in parsed:
            # Top-level keys must precede every table, hence a block at the very start.
            text = put_block(text, "codex-profile", f'profile = "{wrappers.CODEX_PROVIDER}"', at_start=True)
        tomllib.loads(text)  # never leave a file Codex cannot read
        return text

    def revert(current: str) -> str | None:
        return remove_block(remove_block(current, "codex-profile"), "codex") or None

    rc = rc_edit(ctx, "codex", {wrappers.KEY_VARIABLE: _key_expr(ctx)})
    return [Edit(codex_home(ctx) / "config.toml", apply, revert), rc]


def opencode_path(ctx: Context) -> Path:
    base = Path(ctx.env["XDG_CONFIG_HOME"]) if ctx.env.get("XDG_CONFIG_HOME") else ctx.home / ".config"
    return base / "opencode" / "opencode.json"


def edits_for(tool: str, ctx: Context, originals: dict[str, Any]) -> list[Edit]:
    key = _key_expr(ctx)
    if tool == "claude":
        return [rc_edit(ctx, "claude", {"ANTHROPIC_BASE_URL": ctx.base_url, "ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_API_KEY": None})]
    if tool == "codex":
        return codex_edits(ctx, originals)
    if tool == "gemini":
        settings = ctx.home / ".gemini" / "settings.json"
        return [
            json_edit(settings, {("security", "auth", "selectedType"): "gemini-api-key"}, originals),
            rc_edit(ctx, "gemini", {"GOOGLE_GEMINI_BASE_URL": ctx.base_url, "GEMINI_API_KEY": key}),
        ]
    if tool == "opencode":
        path = opencode_path(ctx)
        if path.with_suffix(".jsonc").exists() and not path.exists():
            raise SetupError(f"{path.with_suffix('.jsonc')} has comments setup cannot keep; add the provider by hand")
        overrides = wrappers.opencode_config(wrappers.Gateway(ctx.base_url, ""), "{env:" + wrappers.KEY_VARIABLE + "}")
        values = {
            ("provider", name, "options", option): value
            for name, spec in overrides["provider"].items()
            for option, value in spec["options"].items()
        }
        return [json_edit(path, values, originals), rc_edit(ctx, "opencode", {wrappers.KEY_VARIABLE: key})]
    if tool == "aider":
        return [rc_edit(ctx, "aider", {"OPENAI_API_BASE": ctx.base_url + "/v1", "OPENAI_API_KEY": key})]
    raise SetupError(f"unknown tool {tool!r}; one of {', '.join(SETUP_TOOLS)}")


# -- manifest and the two directions ------------------------------------------------


def manifest_path(ctx: Context, tool: str) -> Path:
    return ctx.data_dir / "setup" / f"{tool}.json"


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode()
    except FileNotFoundError:
        return None


def _write(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".governor-tmp")
    tmp.write_bytes(text.encode())
    if path.exists():
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


def _load_manifest(ctx: Context, tool: str) -> dict[str, Any]:
    path = manifest_path(ctx, tool)
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {"files": {}, "originals": {}}


def setup(tool: str, ctx: Context) -> list[str]:
    """Apply; returns what changed, one line per file ([] when already set up)."""
    manifest = _load_manifest(ctx, tool)
    edits = edits_for(tool, ctx, manifest["originals"])
    planned = []
    for edit in edits:
        current = _read(edit.path)
        planned.append((edit, current, edit.apply(current)))  # all or nothing: compute first
    changed = []
    for edit, current, new in planned:
        record = manifest["files"].setdefault(str(edit.path), {"original": current})
        record["written"] = new
        if new != current:
            _write(edit.path, new)
            changed.append(f"updated {edit.path}")
    path = manifest_path(ctx, tool)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps(manifest, indent=2))
    return changed


def pending(tool: str, ctx: Context) -> list[Path]:
    """The files `setup` would still change ([]: set up, and pointing at `ctx.base_url`). Reads only."""
    originals = dict(_load_manifest(ctx, tool)["originals"])  # a copy: apply() records into it
    return [edit.path for edit in edits_for(tool, ctx, originals) if edit.apply(_read(edit.path)) != _read(edit.path)]


def undo(tool: str, ctx: Context) -> list[str]:
    manifest = _load_manifest(ctx, tool)
    edits = edits_for(tool, ctx, manifest["originals"])
    changed = []
    for edit in edits:
        current = _read(edit.path)
        if current is None:
            continue
        record = manifest["files"].get(str(edit.path))
        if record is not None and record.get("written") == current:
            restored = record.get("original")  # untouched since setup: back to the exact bytes
        else:
            restored = edit.revert(current)  # edited since: take out only our part
        if restored != current:
            _write(edit.path, restored)
            changed.append(f"{'removed' if restored is None else 'restored'} {edit.path}")
    manifest_path(ctx, tool).unlink(missing_ok=True)
    return changed


def copy_to_clipboard(text: str) -> bool:
    """Best effort, through whatever clipboard tool the OS has."""
    candidates = [["pbcopy"], ["wl-copy"], ["xclip", "-selection", "clipboard"], ["xsel", "--clipboard", "--input"], ["clip"]]
    for command in candidates:
        if shutil.which(command[0]) and (command[0] != "xclip" or os.environ.get("DISPLAY")):
            try:
                subprocess.run(command, input=text.encode(), check=True, timeout=3)
                return True
            except (OSError, subprocess.SubprocessError):
                continue
    return False


def governor_command() -> str:
    found = shutil.which("governor")
    return found or f"{sys.executable} -m agent.cli"
