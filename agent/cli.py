"""`governor …`: the command line. Only `run` imports the daemon (and mitmproxy);
everything else is a thin client of the agent's local API or of local files,
so wrappers and `status` start fast."""

from __future__ import annotations

import argparse
import asyncio
import sys

from agent import logs
from agent.config import Settings, load_settings
from agent.version import VERSION

# The coding tools `governor <tool>` wraps (agent/wrappers.py says what each needs).
TOOL_NAMES = ("aider", "claude", "codex", "cursor", "gemini", "opencode")


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from agent.mitmlean import skip_default_addons

    skip_default_addons()  # before the daemon imports mitmproxy's addons
    from agent.daemon import serve  # the only import of mitmproxy
    from agent.store import StoreInUse

    logs.add_file()  # besides stderr: what `governor logs` and the tray's "Open logs" read
    writer = logs.off_the_loop()
    try:
        asyncio.run(serve(settings))
    except StoreInUse as exc:
        print(f"governor: {exc}", file=sys.stderr)
        return 2
    finally:
        writer.stop()
    return 0


LEVEL_COLOURS = {" WARNING ": "\033[33m", " ERROR ": "\033[31m", " CRITICAL ": "\033[31m"}


def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    path = logs.log_path()
    if not path.exists() and not args.follow:
        print(f"governor: no agent log yet at {path}; `governor run` writes it (GOVERNOR_LOG_DIR moves it)", file=sys.stderr)
        return 1
    colour = sys.stdout.isatty() and "NO_COLOR" not in __import__("os").environ

    def show(line: str) -> None:
        tint = next((c for level, c in LEVEL_COLOURS.items() if level in line[:40]), None) if colour else None
        print(f"{tint}{line}\033[0m" if tint else line, flush=True)

    for line in logs.tail(path, args.lines):
        show(line)
    if args.follow:
        try:
            for line in logs.follow(path):
                show(line)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_key(settings: Settings, args: argparse.Namespace) -> int:
    from agent import secrets

    configured = settings.local_key.get_secret_value() if settings.local_key else None
    print(secrets.local_key(configured, settings.data_dir))
    return 0


def cmd_secret(settings: Settings, args: argparse.Namespace) -> int:
    from agent import secrets
    from agent.config import SECRET_FIELDS

    if args.name not in SECRET_FIELDS:
        print(f"governor: unknown secret {args.name!r}; one of {', '.join(sorted(SECRET_FIELDS))}", file=sys.stderr)
        return 2
    if args.action == "delete":
        secrets.delete_secret(args.name, settings.data_dir)
        return 0
    value = sys.stdin.readline().strip() if not sys.stdin.isatty() else __import__("getpass").getpass(f"{args.name}: ")
    if not value:
        print("governor: empty value, nothing stored", file=sys.stderr)
        return 2
    secrets.set_secret(args.name, value, settings.data_dir)
    print(f"stored {args.name}")
    return 0


def cmd_tool(settings: Settings, args: argparse.Namespace) -> int:
    from agent import launcher

    return launcher.run_tool(args.command, list(args.tool_args), settings)


# `governor status` exit codes (documented in its --help).
STATUS_EXIT = {"governed": 0, "warning": 1, "blocked": 2, "not running": 3}


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from agent import client as api
    from agent import statusview

    with api.from_settings(settings) as local:
        try:
            status = local.status()
        except api.ClientError as exc:
            if args.json:
                print(json.dumps({"state": "not running", "error": str(exc)}))
            else:
                print(f"governor: {exc}", file=sys.stderr)
            return STATUS_EXIT["not running"]
    print(json.dumps(status, indent=2) if args.json else statusview.render_text(status))
    return STATUS_EXIT[statusview.health(status).value]


def cmd_doctor(settings: Settings | None, args: argparse.Namespace, settings_error: str | None = None) -> int:
    from agent import doctor

    results = doctor.run(settings, settings_error)
    for result in results:
        print(result.line())
    failed = sum(r.outcome == doctor.FAIL for r in results)
    print(f"\n{failed} check{'s' if failed != 1 else ''} failed" if failed else "\nall checks passed")
    return doctor.exit_code(results)


def cmd_setup(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent import client as api
    from agent import secrets, toolsetup, wrappers

    if args.proxy:
        return cmd_setup_proxy(settings, args)
    base_url = api.base_url_for(settings.listen)
    if args.tool == "cursor":
        configured = settings.local_key.get_secret_value() if settings.local_key else None
        gateway = wrappers.Gateway(base_url, secrets.local_key(configured, settings.data_dir))
        print(wrappers.cursor_instructions(gateway))
        if toolsetup.copy_to_clipboard(gateway.key):
            print("(the key is on the clipboard)")
        return 0
    import os

    ctx = toolsetup.Context(
        home=Path.home(), env=dict(os.environ), data_dir=Path(settings.data_dir), base_url=base_url,
        governor=toolsetup.governor_command(),
    )
    try:
        changes = toolsetup.undo(args.tool, ctx) if args.undo else toolsetup.setup(args.tool, ctx)
    except (toolsetup.SetupError, ValueError) as exc:
        print(f"governor: {exc}", file=sys.stderr)
        return 2
    for line in changes or ["nothing to change"]:
        print(line)
    if changes and not args.undo:
        print(f"open a new shell (or `source` your rc file), then run `{args.tool}` as usual")
    return 0


def cmd_setup_proxy(settings: Settings, args: argparse.Namespace) -> int:
    """`governor setup --proxy <tool>`: HTTPS_PROXY and the CA variables for that one tool (agent/pac.py)."""
    import os
    from pathlib import Path

    from agent import pac, toolsetup, trustca

    files = trustca.ensure_ca(settings.data_dir)
    try:
        changes = pac.setup_proxy(
            args.tool, Path.home(), dict(os.environ), f"http://{settings.intercept_listen}", files, undo=args.undo
        )
    except toolsetup.SetupError as exc:
        print(f"governor: {exc}", file=sys.stderr)
        return 2
    for line in changes or ["nothing to change"]:
        print(line)
    if not args.undo and not settings.intercept_enabled:
        print("note: intercept mode is off; enable it (intercept_enabled = true) and restart the agent")
    return 0


def cmd_trust_ca(settings: Settings, args: argparse.Namespace) -> int:
    from agent import trustca

    return trustca.trust_ca(settings.data_dir, undo=args.undo)


def cmd_pac(settings: Settings, args: argparse.Namespace) -> int:
    from agent import pac
    from agent.core.routing import INTERCEPT_HOSTS

    print(pac.pac(settings.intercept_listen, [*INTERCEPT_HOSTS, *settings.intercept_hosts]), end="")
    print(f"// also served at http://{settings.intercept_listen}/proxy.pac while intercept mode is on", file=sys.stderr)
    return 0


def cmd_tray(settings: Settings, args: argparse.Namespace) -> int:
    from tray.app import main as tray_main

    return tray_main(settings)


def cmd_open(settings: Settings, args: argparse.Namespace) -> int:
    from agent import client as api
    from agent import spendpage

    with api.from_settings(settings) as local:
        try:
            url = spendpage.open_in_browser(local, open_browser=not args.print_url)
        except api.ClientError as exc:
            print(f"governor: {exc}", file=sys.stderr)
            return 3
    print(url if args.print_url else "opened the spend page in your browser (the link works once, for a minute)")
    return 0


def cmd_login(settings: Settings, args: argparse.Namespace) -> int:
    from agent import login

    url = args.control_plane or settings.control_plane_url
    try:
        asyncio.run(login.login(url, settings.data_dir, open_browser=not args.no_browser))
    except login.LoginError as exc:
        print(f"governor: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


def cmd_logout(settings: Settings, args: argparse.Namespace) -> int:
    from agent import login

    asyncio.run(login.logout(settings.data_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="governor", description="Governance agent for coding CLIs' LLM traffic")
    parser.add_argument("--version", action="version", version=f"governor {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the agent in the foreground").set_defaults(func=cmd_run)
    sub.add_parser("key", help="print the local key coding tools use").set_defaults(func=cmd_key)
    logs_cmd = sub.add_parser("logs", help="print the agent's log (its file in the user log dir)")
    logs_cmd.add_argument("-f", "--follow", action="store_true", help="keep printing new lines as the agent writes them")
    logs_cmd.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many of the last lines (default 50)")
    logs_cmd.set_defaults(func=cmd_logs)
    secret = sub.add_parser("secret", help="store or delete a provider key in the OS keychain")
    secret.add_argument("action", choices=["set", "delete"])
    secret.add_argument("name", help="anthropic_api_key, openai_api_key, gemini_api_key or local_key")
    secret.set_defaults(func=cmd_secret)
    status = sub.add_parser(
        "status",
        help="the agent's state, budgets and today's spend",
        epilog="exit codes: 0 governed, 1 governed with warnings (budget >= 80%%, stale bundle), "
        "2 blocked (a block budget is used up), 3 agent not running or unreachable",
    )
    status.add_argument("--json", action="store_true", help="print the raw status JSON")
    status.set_defaults(func=cmd_status)
    sub.add_parser("doctor", help="check the setup; each failing check with its fix").set_defaults(func=cmd_doctor)
    setup = sub.add_parser("setup", help="point a tool at the agent persistently (shell rc / tool config)")
    setup.add_argument("tool", choices=TOOL_NAMES)
    setup.add_argument("--undo", action="store_true", help="restore the files setup changed")
    setup.add_argument(
        "--proxy", action="store_true", help="use the tool through the HTTPS_PROXY listener (intercept mode) instead"
    )
    setup.set_defaults(func=cmd_setup)
    trust = sub.add_parser("trust-ca", help="install this machine's intercept CA in the OS trust stores")
    trust.add_argument("--undo", action="store_true", help="remove it again")
    trust.set_defaults(func=cmd_trust_ca)
    sub.add_parser("pac", help="print the proxy auto-config (PAC) file for intercept mode").set_defaults(func=cmd_pac)
    sub.add_parser("tray", help="run the system-tray icon").set_defaults(func=cmd_tray)
    login_cmd = sub.add_parser(
        "login",
        help="sign in to your org's control plane (device code in the browser)",
        epilog="exit codes: 0 signed in; 3-17 one per failure, listed in docs/control-plane.md",
    )
    login_cmd.add_argument("--control-plane", metavar="URL", help="control-plane base URL (default: config)")
    login_cmd.add_argument("--no-browser", action="store_true", help="print the link only")
    login_cmd.set_defaults(func=cmd_login)
    sub.add_parser("logout", help="revoke this laptop's session and wipe its credentials").set_defaults(func=cmd_logout)
    open_cmd = sub.add_parser("open", help="open the local spend page in the browser (a one-time link)")
    open_cmd.add_argument("--print-url", action="store_true", help="print the one-time link instead of opening it")
    open_cmd.set_defaults(func=cmd_open)
    for tool in TOOL_NAMES:
        wrapped = sub.add_parser(tool, help=f"run {tool} through the agent: governor {tool} [args…]", add_help=False)
        wrapped.add_argument("tool_args", nargs=argparse.REMAINDER)
        wrapped.set_defaults(func=cmd_tool)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOL_NAMES:
        # Everything after the tool's name is the tool's, `--help` and `-c` included.
        args = argparse.Namespace(command=argv[0], tool_args=argv[1:], func=cmd_tool)
    else:
        args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        if args.command == "doctor":
            return cmd_doctor(None, args, settings_error=str(exc))
        print(f"governor: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    return int(args.func(settings, args))


if __name__ == "__main__":
    sys.exit(main())
