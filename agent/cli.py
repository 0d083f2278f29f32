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


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from agent.daemon import serve  # the only import of mitmproxy

    asyncio.run(serve(settings))
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="governor", description="Governance agent for coding CLIs' LLM traffic")
    parser.add_argument("--version", action="version", version=f"governor {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the agent in the foreground").set_defaults(func=cmd_run)
    sub.add_parser("key", help="print the local key coding tools use").set_defaults(func=cmd_key)
    secret = sub.add_parser("secret", help="store or delete a provider key in the OS keychain")
    secret.add_argument("action", choices=["set", "delete"])
    secret.add_argument("name", help="anthropic_api_key, openai_api_key, gemini_api_key or local_key")
    secret.set_defaults(func=cmd_secret)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        print(f"governor: invalid configuration: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    return int(args.func(settings, args))


if __name__ == "__main__":
    sys.exit(main())
