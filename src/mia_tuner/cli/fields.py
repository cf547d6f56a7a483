"""Command-line options generated from the typed configuration dataclasses.

One option per field: its name (``--field-name`` unless renamed), type, default, choices and
help come from the dataclass (help from ``field(metadata={"help": ...})``), so a default is
written once, in the dataclass, and every field a suite or the API can set can be set on the
command line. The options of one dataclass get destinations under a prefix, so two dataclasses
with a field of the same name (a split's ``seed`` and a trainer's) can share a parser.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def field_help(cls, name: str) -> str:
    """A dataclass field's help text, for a hand-written option that stands for the field."""
    return cls.__dataclass_fields__[name].metadata.get("help", "")


def _base_type(hint):
    """int, float, str or bool from a (possibly Optional) type hint."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _item_parser(item_type):
    """The argparse type of one value: floats must be finite (``nan`` is refused while parsing)."""
    from .args import finite_float

    return finite_float if item_type is float else item_type


def _comma_list(item_type):
    """An argparse type reading ``a,b,c`` into a list of ``item_type``."""

    def parse(text: str) -> list:
        items = [part.strip() for part in text.split(",") if part.strip()]
        try:
            return [_item_parser(item_type)(part) for part in items]
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"expected comma-separated {'finite ' * (item_type is float)}"
                                             f"{item_type.__name__} values, got {text!r}") from None
    parse.__name__ = f"list of {item_type.__name__}"
    return parse


def value_types() -> dict:
    """The argument type of each kind of value a dataclass names in its ``VALUES``: refused
    while parsing, with a message naming the option."""
    from . import args

    return {"positive": args.positive_int, "non-negative": args.non_negative, "seed": args.seed_value,
            "share": args.share, "shares": args.shares, "fraction": args.fraction, "tokens": args.token_budget}


def add_dataclass_options(parser: argparse.ArgumentParser, cls, *, prefix: str, skip=(),
                          rename: dict | None = None, choices: dict | None = None,
                          unset=(), unset_text: str = "the preset's") -> None:
    """Add one option per field of ``cls`` (dest ``prefix + name``). Fields in ``unset``
    default to None (resolved later, e.g. by a preset); ``rename`` maps field -> flag. The
    values a field accepts come from the dataclass: ``cls.CHOICES`` (field -> allowed values)
    and ``cls.VALUES`` (field -> a kind of value of ``value_types``, refused while parsing;
    other fields are checked when the dataclass is built); ``choices`` adds choices the
    dataclass cannot know (the chat templates a tokenizer module ships). ``list[...]`` fields
    take comma-separated values; ``unset_text`` says where an unset field's value comes from."""
    rename = rename or {}
    choices = {**getattr(cls, "CHOICES", {}), **(choices or {})}
    kinds = value_types()
    types = {name: kinds[kind] for name, kind in getattr(cls, "VALUES", {}).items()}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        hint = hints[field.name]
        if typing.get_origin(hint) is list:  # list[str] / list[int]: comma-separated
            kind = _comma_list(typing.get_args(hint)[0])
        else:
            kind = _base_type(hint)
        flag = rename.get(field.name, "--" + field.name.replace("_", "-"))
        if field.name in unset:
            default = None
        elif field.default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()  # a list field's default
        else:
            default = field.default
        help_text = field.metadata.get("help", "")
        shown = unset_text if field.name in unset else repr(default)
        help_text = f"{help_text} (default: {shown})".strip().replace("%", "%%")  # argparse formats help
        if kind is bool:
            parser.add_argument(flag, dest=prefix + field.name, default=default, help=help_text,
                                action=argparse.BooleanOptionalAction)
            continue
        parser.add_argument(flag, dest=prefix + field.name, type=types.get(field.name, _item_parser(kind)),
                            default=default,
                            help=help_text,
                            choices=choices.get(field.name),
                            metavar=None if field.name in choices else field.name.upper())


def values_from_args(cls, args, *, prefix: str) -> dict:
    """``{field: value}`` of the options ``add_dataclass_options`` added for ``cls``."""
    values = vars(args)
    return {f.name: values[prefix + f.name] for f in dataclasses.fields(cls) if prefix + f.name in values}
