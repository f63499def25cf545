"""Write vLLM's `vllm serve` flags as its own parser declares them: vllm_platform/contract/vllm_serve_flags.json.

The extraArgs check and the policy pack refuse a flag or a value that vLLM's parser would refuse at start,
a crash loop otherwise; they read the flags from that table, so that they know the release the default
image pins and nothing hand-written. It also puts a few thousand entries to that parser and records its
answers (tests/data/vllm_serve_verdicts.json), which a test holds the table's reader to. Run it after
bumping that image, with a Python that has that vLLM:

    make vllm-flags VLLM_PYTHON=/path/to/python

It needs only the standard library and vLLM, and no GPU (it sets VLLM_TARGET_DEVICE=cpu, which lets vLLM
import on a machine without one); or inside the pinned image itself:

    docker run --rm -v "$PWD:/src" -w /src --entrypoint python3 vllm/vllm-openai:vX.Y.Z tools/vllm_cli_table.py \
        vllm_platform/contract/vllm_serve_flags.json tests/data/vllm_serve_verdicts.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

# What a value is converted with, where the table's reader can convert it the same way. Any other
# converter (vLLM's JSON and size parsers, lambdas) is "any": the reader then takes every value, since
# refusing one vLLM would take is worse than passing one it refuses.
PLAIN_TYPES: dict[Any, str] = {None: "text", str: "text", int: "int", float: "float"}
PLAIN_ACTIONS = (argparse._StoreAction, argparse._AppendAction)
# vLLM's wrapper that reads "" and "None" as None before converting the rest (engine/arg_utils.py).
OPTIONAL_WRAPPER = "_optional_type"


def value_type(convert: Optional[Callable[[str], Any]]) -> tuple[str, bool]:
    """(the table's name for what converts a value, whether "" and "None" read as None first)."""
    if convert in PLAIN_TYPES:
        return PLAIN_TYPES[convert], False
    if getattr(convert, "__name__", None) == OPTIONAL_WRAPPER and getattr(convert, "__closure__", None):
        inner = convert.__closure__[0].cell_contents  # type: ignore[union-attr]
        if inner in PLAIN_TYPES:
            return PLAIN_TYPES[inner], True
    return "any", False


# The bounds vLLM's config fields declare (annotated_types' Ge, Gt, Le, Lt, in pydantic's field metadata).
BOUND_NAMES = ("ge", "gt", "le", "lt")
# (a parser group's title, an action's dest) -> (the config field it sets, its bounds), where it has any.
BoundsOf = Callable[[str, str], Optional[tuple[str, dict[str, float]]]]
# (an action's dest, the value the parser set) -> whether the config field it sets validates the value.
FieldCheck = Callable[[str, Any], bool]


def config_bounds(title: str, dest: str) -> Optional[tuple[str, dict[str, float]]]:
    """The bounds of the config field a flag sets: vLLM names each group of its parser after the config class
    its flags set (SchedulerConfig, CacheConfig, ...), and each flag's dest after the field. The engine
    validates the class with pydantic at start, so a value outside them stops vLLM before it loads."""
    field = config_fields(title).get(dest)
    if field is None:
        return None
    bounds = {name: getattr(rule, name) for rule in field.metadata for name in BOUND_NAMES if hasattr(rule, name)}
    return (f"{title}.{dest}", bounds) if bounds else None


def config_fields(title: str) -> dict[str, Any]:
    """The pydantic fields of the vLLM config class a parser group is named after; none for other groups."""
    import vllm.config

    return getattr(getattr(vllm.config, title, None), "__pydantic_fields__", {})


def describe(parser: argparse.ArgumentParser, bounds_of: Optional[BoundsOf] = None) -> list[dict[str, Any]]:
    """Every optional argument of a parser: its spellings, how many values it takes and what they must be."""
    flags = []
    titles = {id(action): group.title or "" for group in parser._action_groups for action in group._group_actions}
    for action in parser._actions:
        if not action.option_strings:
            continue
        entry: dict[str, Any] = {"names": list(action.option_strings)}
        if action.nargs == 0:
            entry["takes"] = "nothing"
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                entry["exits"] = True
        else:
            # An action class of vLLM's own checks values in code of its own: any to the table's reader.
            kind, none = value_type(action.type) if type(action) in PLAIN_ACTIONS else ("any", False)
            entry["takes"] = kind
            if none:
                entry["none"] = True
            if action.nargs is not None:
                entry["nargs"] = action.nargs
            if isinstance(action, argparse._AppendAction):
                entry["repeats"] = True
            # Choices are compared with the converted value; where the converter is not one the reader
            # has, neither are they.
            if action.choices is not None and kind != "any":
                entry["choices"] = list(action.choices)
            # Bounds hold for the one number the flag's converter makes, where the reader makes the same one.
            single = kind in ("int", "float") and action.nargs is None and "repeats" not in entry
            bounded = bounds_of(titles[id(action)], action.dest) if bounds_of and single else None
            if bounded:
                entry["field"], entry["bounds"] = bounded
        flags.append(entry)
    return flags


def serve_parser() -> argparse.ArgumentParser:
    """`vllm serve`'s parser, built as vLLM's CLI builds it."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser())


def probes(flags: list[dict[str, Any]]) -> list[list[str]]:
    """Entries to ask vLLM's own parser about: every spelling of every flag, with and without a value, and
    values of each kind it may take or refuse; abbreviations, underscores, dotted keys and unknown names."""
    values = ["8", "0.5", "-1", "lots", "None", "", "{}", '{"a": 1}']
    asked: list[list[str]] = []
    for entry in flags:
        choices = [str(choice) for choice in entry.get("choices", []) if choice is not None]
        for name in entry["names"]:
            asked += [[name], [f"{name}=true"]] if entry["takes"] == "nothing" else []
            asked += [[f"{name}={value}"] for value in [*values, *choices, *(c.upper() for c in choices)]]
            asked += [[name]] if entry["takes"] != "nothing" else []
        long = next(name for name in entry["names"] if name.startswith("--"))
        asked += [[long[:-1] + "=1"], [long.replace("-", "_").replace("__", "--", 1) + "=1"], [long + "x=1"]]
        asked += [[f"{long}.key=1"], [f"{long}.key"]]
    return asked + [["-O3"], ["-O=2"], ["-Ofoo"], ["-O", "3"], ["--"], ["model"]]


def verdicts(parser: argparse.ArgumentParser, asked: list[list[str]], fields: Optional[FieldCheck] = None) -> list[list[Any]]:
    """[words, whether vLLM takes them] for each probe: refused is an error exit or any exception of its parser,
    or, with `fields`, a value set that its config field refuses."""
    answered = []
    for words in asked:
        try:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                parsed = parser.parse_args(words)
        except (Exception, SystemExit):
            answered.append([words, False])
            continue
        set_values = [(dest, value) for dest, value in vars(parsed).items() if value != parser.get_default(dest)]
        answered.append([words, fields is None or all(fields(dest, value) for dest, value in set_values)])
    return answered


def bound_probes(flags: list[dict[str, Any]]) -> list[list[str]]:
    """Values at and either side of each bound a config field declares."""
    asked = []
    for entry in flags:
        step = 1 if entry["takes"] == "int" else 0.001
        for bound in entry.get("bounds", {}).values():
            asked += [[f"{entry['names'][0]}={value}"] for value in (bound - step, bound, bound + step)]
    return asked


def field_check(parser: argparse.ArgumentParser) -> FieldCheck:
    """Whether a value set by the parser is one its config field's bounds admit, by pydantic with the field's own
    annotation and metadata, as the engine validates its config at start."""
    from typing import Annotated

    import pydantic

    titles = {action.dest: group.title or "" for group in parser._action_groups for action in group._group_actions}

    def check(dest: str, value: Any) -> bool:
        bounded = config_bounds(titles.get(dest, ""), dest)
        if bounded is None or value is None:
            return True
        title, field_name = bounded[0].split(".")
        field = config_fields(title)[field_name]
        try:
            pydantic.TypeAdapter(Annotated[(field.annotation, *field.metadata)]).validate_python(value)
        except pydantic.ValidationError:
            return False
        return True

    return check


def main() -> None:
    from importlib.metadata import version

    # vLLM's own logging writes to stdout; unconfigured, its warnings go to stderr.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    table_path, verdicts_path = map(Path, sys.argv[1:3])
    parser = serve_parser()
    read = {
        "vllm": version("vllm"),
        "read": datetime.date.today().isoformat(),
        "python": ".".join(map(str, sys.version_info[:3])),
    }
    flags = describe(parser, config_bounds)
    table = {"about": "vllm serve's flags as vLLM's own parser declares them; written by tools/vllm_cli_table.py", **read}
    table_path.write_text(dumps(table, "flags", flags))
    answers = {"about": "vLLM's own answer to each entry (its parser, and for bounds its config fields); written by tools/vllm_cli_table.py", **read}
    answered = verdicts(parser, probes(flags) + bound_probes(flags), field_check(parser))
    verdicts_path.write_text(dumps(answers, "verdicts", answered))


def dumps(head: dict[str, Any], key: str, rows: list[Any]) -> str:
    """JSON with one row per line, so that a vLLM bump reads as a diff of the flags it changed."""
    lines = [json.dumps(head)[:-1] + f', "{key}": [']
    lines += [json.dumps(row) + "," for row in rows]
    lines[-1] = lines[-1].rstrip(",")
    return "\n".join([*lines, "]}", ""])


if __name__ == "__main__":
    main()
