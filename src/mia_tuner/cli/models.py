"""`mia-tuner models` (the offline models: list, fetch) and `mia-tuner methods`."""

from __future__ import annotations


def add_parser(commands) -> None:
    models = commands.add_parser("models", help="offline models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    model_commands.add_parser("list", help="the offline models and their state")
    fetch = model_commands.add_parser("fetch", help="download and prepare offline models")
    fetch.add_argument("names", nargs="*", help="default: all offline models")


def run(args) -> None:
    from ..models import offline

    if args.models_command == "list":
        for row in offline.list_models():
            print(f"{row['name']:<24} {row['kind']:<8} {row['state']:<12} {row.get('path', '')}")
        return
    for name in args.names or [row["name"] for row in offline.list_models()]:
        print(f"{name}: ready at {offline.prepare(name)}")


def add_methods_parser(commands) -> None:
    commands.add_parser("methods", help="list the registered methods")


def run_methods(args) -> None:
    from ..methods import available_methods

    print("\n".join(available_methods()))
