"""A setting is declared once: its default and its help live on the config dataclass field.

The command line generates its options from these fields (`pipeline/cli.py`), so a new
setting is one new field, and `--help` always shows the default the code really uses.
Fields declared without `setting` (internal knobs) get no option.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    choices: tuple[Any, ...] | None = None,
    const: Any = dataclasses.MISSING,
    shown_default: str | None = None,
) -> Any:
    """A dataclass field that the command line offers as `flag` (default `--field-name`).

    `const`: the option takes no value and sets the field to `const` (e.g. `--no-augment`).
    `shown_default`: what `--help` says of the default where the value alone says little.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "metavar": metavar,
        "choices": choices,
        "const": const,
        "shown_default": shown_default,
    }
    return dataclasses.field(default=default, metadata=metadata)


def documented_fields(config_class: type) -> list[dataclasses.Field]:
    """The fields of `config_class` declared with `setting`, in declaration order."""
    return [f for f in dataclasses.fields(config_class) if "help" in f.metadata]


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata["flag"] or "--" + field.name.replace("_", "-")
