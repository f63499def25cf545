"""Write vLLM's `vllm serve` flags as its own parser declares them: vllm_platform/contract/vllm_serve_flags.json.

The extraArgs check and the policy pack refuse a flag or a value that vLLM's parser would refuse at start,
a crash loop otherwise; they read the flags from that table, so that they know the release the default
image pins and nothing hand-written. It also puts a few thousand entries to vLLM (its parser, and where
a flag's config field declares bounds, its engine) and records the answers
(tests/data/vllm_serve_verdicts.json), which a test holds the table's reader to. Run it after bumping
that image, with a Python that has that vLLM:

    make vllm-flags VLLM_PYTHON=/path/to/python

It needs only the standard library and vLLM, and no GPU (it sets VLLM_TARGET_DEVICE=cpu, which lets vLLM
import on a machine without one); or inside the pinned image itself:

    docker run --rm -v "$PWD:/src" -w /src --entrypoint python3 vllm/vllm-openai:vX.Y.Z tools/vllm_cli_table.py \
        vllm_platform/contract/vllm_serve_flags.json tests/data/vllm_serve_verdicts.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

# What a value is converted with, where the table's reader can convert it the same way. Any other
# converter (vLLM's dataclass and size parsers, lambdas) is "any": the reader then takes every value, since
# refusing one vLLM would take is worse than passing one it refuses.
PLAIN_TYPES: dict[Any, str] = {None: "text", str: "text", int: "int", float: "float", json.loads: "json"}
PLAIN_ACTIONS = (argparse._StoreAction, argparse._AppendAction)
# vLLM's wrappers (engine/arg_utils.py): `optional_type` reads "" and "None" as None before converting the
# rest, `parse_type` turns a converter's ValueError into argparse's error.
OPTIONAL_WRAPPER = "_optional_type"
PARSE_WRAPPER = "_parse_type"
# vLLM's reader of a value that is JSON where it is braced, `{...}`, and text otherwise.
BRACED_JSON_OR_TEXT = "union_dict_and_str"


def value_type(convert: Optional[Callable[[str], Any]]) -> tuple[str, bool]:
    """(the table's name for what converts a value, whether "" and "None" read as None first)."""
    none = False
    while getattr(convert, "__name__", None) in (OPTIONAL_WRAPPER, PARSE_WRAPPER) and getattr(convert, "__closure__", None):
        none = none or convert.__name__ == OPTIONAL_WRAPPER  # type: ignore[union-attr]
        convert = convert.__closure__[0].cell_contents  # type: ignore[union-attr]
    if convert in PLAIN_TYPES:
        return PLAIN_TYPES[convert], none
    if getattr(convert, "__name__", None) == BRACED_JSON_OR_TEXT:
        return "braced json or text", True
    return "any", False


# The bounds vLLM's config fields declare (annotated_types' Ge, Gt, Le, Lt, in pydantic's field metadata).
BOUND_NAMES = ("ge", "gt", "le", "lt")
# (a parser group's title, an action's dest) -> (the config field it sets, its bounds), where it has any.
BoundsOf = Callable[[str, str], Optional[tuple[str, dict[str, float]]]]


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
            if action.choices is not None and kind in ("text", "int", "float"):
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
    """Entries to ask vLLM about: every spelling of every flag, with and without a value, and values of each
    kind it may take or refuse (JSON and broken JSON among them); abbreviations, underscores, dotted keys
    and their list elements, unknown names; and values at and either side of each bound."""
    values = ["8", "0.5", "-1", "lots", "None", "", "{}", '{"a": 1}', '{"a": }', "[1,"]
    asked: list[list[str]] = []
    for entry in flags:
        choices = [str(choice) for choice in entry.get("choices", []) if choice is not None]
        for name in entry["names"]:
            asked += [[name], [f"{name}=true"]] if entry["takes"] == "nothing" else []
            asked += [[f"{name}={value}"] for value in [*values, *choices, *(c.upper() for c in choices)]]
            asked += [[name], [name, "8"], [name, "lots", "8"]] if entry["takes"] != "nothing" else [[name, "8"]]
        long = next(name for name in entry["names"] if name.startswith("--"))
        asked += [[long[:-1] + "=1"], [long.replace("-", "_").replace("__", "--", 1) + "=1"], [long + "x=1"]]
        asked += [[f"{long}.key=1"], [f"{long}.key"], [f"{long}.key", "1"], [f"{long}.key+=1,2"]]
        step = 1 if entry["takes"] == "int" else 0.001
        for bound in entry.get("bounds", {}).values():
            asked += [[f"{long}={value}"] for value in (bound - step, bound, bound + step)]
    return asked + [["-O3"], ["-O=2"], ["-Ofoo"], ["-O", "3"], ["-O-1.5"], ["--"], ["model"]]


# A text-only Llama small enough that vLLM builds its engine config for it from config.json alone, on a CPU.
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 4, "num_hidden_layers": 2, "vocab_size": 1000,
    "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "torch_dtype": "float32",
}  # fmt: skip


def engine_takes(parser: argparse.ArgumentParser) -> Callable[[list[str]], bool]:
    """Whether vLLM's parser takes the words and its engine builds its config from them, as `vllm serve` does
    before it loads anything: that is where the config fields' bounds are checked. The model is TINY_LLAMA,
    without LoRA or multimodal settings, whose configs vLLM builds only where a model or flag asks for them."""
    import tempfile

    import vllm

    model = Path(tempfile.mkdtemp(prefix="vllm-cli-table-"))
    (model / "config.json").write_text(json.dumps(TINY_LLAMA))

    def takes(words: list[str]) -> bool:
        try:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                parsed = parser.parse_args([str(model), "--skip-tokenizer-init", *words])
                parsed.model = parsed.model_tag
                vllm.AsyncEngineArgs.from_cli_args(parsed).create_engine_config()
        except (Exception, SystemExit):
            return False
        return True

    return takes


def enforced(flags: list[dict[str, Any]], takes: Callable[[list[str]], bool]) -> list[dict[str, Any]]:
    """The flags with only the bounds the engine refuses a number past; the others' configs are not built."""
    past = {"ge": -1, "gt": 0, "le": 1, "lt": 0}
    for entry in flags:
        step = 1 if entry["takes"] == "int" else 0.001
        bounds = {
            name: bound for name, bound in entry.get("bounds", {}).items()
            if not takes([f"{entry['names'][0]}={bound + past[name] * step}"])
        }  # fmt: skip
        entry.pop("bounds", None)
        entry.pop("field", None) if not bounds else entry.update(bounds=bounds)
    return flags


def verdicts(parser: argparse.ArgumentParser, asked: list[list[str]], engine: Callable[[list[str]], bool], bounded: set[str]) -> list[list[Any]]:
    """[words, whether vLLM takes them] for each probe: refused is an error exit or any exception of its parser,
    or, where the words set a flag whose config field declares bounds (`bounded`, their dests), of its engine."""
    answered = []
    for words in asked:
        try:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                parsed = parser.parse_args(words)
        except (Exception, SystemExit):
            answered.append([words, False])
            continue
        sets = {dest for dest, value in vars(parsed).items() if value != parser.get_default(dest)}
        answered.append([words, engine(words) if sets & bounded else True])
    return answered


def main() -> None:
    from importlib.metadata import version

    # vLLM's own logging writes to stdout; unconfigured, its warnings go to stderr.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    table_path, verdicts_path = map(Path, sys.argv[1:3])
    parser = serve_parser()
    read = {"vllm": version("vllm"), "python": ".".join(map(str, sys.version_info[:3]))}
    described = describe(parser, config_bounds)
    dests = {name: action.dest for action in parser._actions for name in action.option_strings}
    bounded = {dests[entry["names"][0]] for entry in described if "bounds" in entry}
    engine = engine_takes(parser)
    asked = probes(described)  # with every bound declared, the ones the engine skips too
    flags = enforced(described, engine)
    table = {"about": "vllm serve's flags as vLLM's own parser declares them; written by tools/vllm_cli_table.py", **read}
    table_path.write_text(dumps(table, "flags", flags))
    answers = {"about": "vLLM's own answer to each entry (its parser, and its engine where bounds apply); written by tools/vllm_cli_table.py", **read}
    verdicts_path.write_text(dumps(answers, "verdicts", verdicts(parser, asked, engine, bounded)))


def dumps(head: dict[str, Any], key: str, rows: list[Any]) -> str:
    """JSON with one row per line, so that a vLLM bump reads as a diff of the flags it changed."""
    lines = [json.dumps(head)[:-1] + f', "{key}": [']
    lines += [json.dumps(row) + "," for row in rows]
    lines[-1] = lines[-1].rstrip(",")
    return "\n".join([*lines, "]}", ""])


if __name__ == "__main__":
    main()
