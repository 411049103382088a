"""The ``empanada`` command line.

``empanada models ...`` manages the model registry. Other packages add command
groups through the entry-point group ``empanada.commands``: each entry point is a
callable ``register(subparsers)`` that adds one sub-command to the
:class:`argparse._SubParsersAction` it receives and sets ``func`` on its parser with
``set_defaults(func=handler)``, where ``handler(args) -> int`` returns the exit code.
For example, in a ``pyproject.toml``::

    [project.entry-points."empanada.commands"]
    segment = "empanada_infer.cli:register"

Exit codes: 0 success, 2 usage or input error (bad arguments, unknown model, invalid
config or bundle), 1 runtime failure (download, checksum, I/O). Errors are one line on
stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
import warnings

from ._bundle import BundleError, export_bundle, import_bundle
from ._config import ConfigError
from ._info import model_info
from ._registry import (
    ModelExistsError,
    ModelNotFoundError,
    _discover,
    get_default_model,
    get_model_config,
    register_model,
)

__all__ = ["COMMAND_GROUP", "HelpFormatter", "build_parser", "cli_message", "main", "register_models_commands"]

#: Entry-point group scanned for extra sub-commands.
COMMAND_GROUP = "empanada.commands"

_USAGE_ERRORS = (ConfigError, BundleError, ModelNotFoundError, ModelExistsError,
                 FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                 ValueError, TypeError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only where it says something.

    Not for flags without a value (``store_true``), defaults of None (the help
    says what happens instead) or help that already names its default.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0
                or "default" in text.lower() or "%(default)" in text):
            return text
        return super()._get_help_string(action)


def _command_entry_points():
    from importlib.metadata import entry_points

    return list(entry_points(group=COMMAND_GROUP))


class _Progress:
    """Download progress on stderr (only when stderr is a terminal)."""

    def __init__(self, stream):
        self.stream = stream
        self.active = stream.isatty()
        self.last = -1

    def __call__(self, done, total):
        if not self.active:
            return
        if total:
            pct = int(100 * done / total)
            if pct == self.last:
                return
            self.last = pct
            text = f"\rdownloading: {done / 1e6:.1f} of {total / 1e6:.1f} MB ({pct}%)"
        else:
            text = f"\rdownloading: {done / 1e6:.1f} MB"
        self.stream.write(text)
        if total and done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _first_sentence(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    sentence = text.split(". ")[0]
    return textwrap.shorten(sentence, width=width, placeholder="...")


def _cmd_list(args) -> int:
    default = get_default_model()
    rows = []
    for name, (path, origin) in _discover().items():
        row = {"name": name, "origin": origin, "default": name == default,
               "config_path": str(path), "description": None, "error": None}
        try:
            row["description"] = get_model_config(name).description.strip()
        except (ConfigError, OSError) as exc:
            row["error"] = str(exc)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models registered")
        return 0
    width = max(len(r["name"]) for r in rows) + 2
    owidth = max(len(r["origin"]) for r in rows)
    for r in rows:
        mark = "*" if r["default"] else " "
        desc = (f"(invalid config: {r['error']})" if r["error"]
                else _first_sentence(r["description"] or ""))
        print(f"{mark} {r['name']:<{width}}{r['origin']:<{owidth}}  {desc}".rstrip())
    print("\n* default model")
    return 0


def _format_info(info) -> str:
    lines = [f"Model: {info['name']} ({info['origin']})"]
    if info["config_path"]:
        lines.append(f"Config: {info['config_path']}")
    if info["arch"]:
        lines.append(f"Architecture: {info['arch']}")
    if info["description"]:
        lines.append("Description:")
        lines += textwrap.wrap(info["description"], width=88, initial_indent="  ",
                               subsequent_indent="  ")
    lines.append("Classes:")
    for c in info["classes"]:
        lines.append(f"  {c['id']}: {c['name']} ({c['kind']})")
    norms = info["norms"]
    lines.append(f"Normalisation: mean {norms['mean']}, std {norms['std']} "
                 f"(fractions of the dtype maximum)")
    lines.append(f"Padding factor: {info['padding_factor']}")
    lines.append(f"Label divisor: {info['label_divisor']}")
    lines.append(f"Weights: {info['model']}")
    state = ("available locally: " + info["local_path"]) if info["cached"] \
        else "not downloaded yet"
    lines.append(f"  {state}")
    if info["model_quantized"]:
        q = "available locally" if info["quantized_cached"] else "not downloaded yet"
        lines.append(f"Quantized weights (CPU only): {info['model_quantized']}")
        lines.append(f"  {q}")
    if info["num_params"] is not None:
        source = " (counted from the architecture; weights not downloaded)" \
            if info.get("num_params_from") == "architecture" else ""
        lines.append(f"Parameters: {info['num_params']:,}{source}")
    if info["weights_error"]:
        lines.append(f"Weights problem: {info['weights_error']}")
    lines.append("Finetuning:")
    lines += [f"  - {h}" for h in info["finetune_hints"]]
    return "\n".join(lines)


def _cmd_info(args) -> int:
    info = model_info(args.name)
    print(json.dumps(info, indent=2) if args.json else _format_info(info))
    return 0


def _cmd_register(args) -> int:
    cfg = register_model(args.name, args.config, model_file=args.model_file,
                         quantized_file=args.quantized_file, overwrite=args.overwrite)
    print(f"registered {cfg.name!r}: {cfg.source}")
    return 0


def _cmd_export(args) -> int:
    out = export_bundle(args.name, args.out, overwrite=args.force,
                        progress=_Progress(sys.stderr))
    print(f"exported {args.name!r} to {out}")
    return 0


def _cmd_import(args) -> int:
    cfg = import_bundle(args.file, name=args.name, force=args.force)
    print(f"imported {cfg.name!r}: {cfg.source}")
    return 0


def register_models_commands(subparsers) -> None:
    """Add the ``models`` command group (list, info, register, export, import).

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The top-level sub-command collection of the ``empanada`` parser.
    """
    models = subparsers.add_parser(
        "models", help="list, inspect, register, export and import models",
        description="Manage the model registry (built-in configs and ~/.empanada).",
    )
    models.set_defaults(func=lambda args: _help(models))
    sub = models.add_subparsers(dest="models_command", metavar="ACTION")

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="describe a model and how to finetune it")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("register", help="register a model config (and weight files)")
    p.add_argument("name", metavar="NAME", help="new model name")
    p.add_argument("config", metavar="CONFIG", help="the model's .yaml config")
    p.add_argument("--model-file", metavar="F", help="weights file or URL to use (copied "
                   "into ~/.empanada/models when local)")
    p.add_argument("--quantized-file", metavar="F", help="quantized weights file or URL")
    p.add_argument("--overwrite", action="store_true", help="replace a model of that name")
    p.set_defaults(func=_cmd_register)

    p = sub.add_parser("export", help="write a model into one .empanada file")
    p.add_argument("name", metavar="NAME")
    p.add_argument("out", metavar="OUT", help="file ending in .empanada, or a folder")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("import", help="register the model inside a .empanada file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", help="model name (default: the file name)")
    p.add_argument("--force", action="store_true",
                   help="replace a model of that name and its weight files")
    p.set_defaults(func=_cmd_import)


def _help(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The ``empanada`` parser with the ``models`` group and every plugin group."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="empanada", description="Organelle segmentation for electron microscopy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(func=lambda args: _help(parser))
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_models_commands(subparsers)
    for ep in sorted(_command_entry_points(), key=lambda e: e.name):
        if ep.name in subparsers.choices:
            continue  # built in, or already added by another plugin
        try:
            ep.load()(subparsers)
        except Exception as exc:  # a broken plugin must not break the other commands
            print(f"empanada: warning: skipped command group {ep.name!r} ({ep.value}): "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)
    _remember_parsers(parser)
    return parser


def _remember_parsers(parser):
    """Let each (sub-)command's namespace know its parser, to word errors in its flags."""
    parser.set_defaults(cli_parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _remember_parsers(sub)


# Library messages name Python arguments (``overwrite=True``, ```label_divisor```); a
# command-line user typed flags. These phrases have a flag of their own or none.
_PHRASES = (
    # "pass overwrite=True (--overwrite)" and "(overwrite=True, --force)": the flag only
    (re.compile(r"\b\w+=True \((--[\w-]+)\)"), r"\1"),
    (re.compile(r"\b\w+=['\"]?([^\s,()'\"]+)['\"]? \((--[\w-]+)\)"), r"\2 \1"),
    (re.compile(r"\(\w+=True, (--[\w-]+)\)"), r"(\1)"),
    (re.compile(r" \(the 'max objects per class'\)"), ""),
    (re.compile(r" or pass on_overflow='drop' to keep only the largest"), ""),
    (re.compile(r"more than label_divisor - 1 = (\d+)"), r"more than \1 (`label_divisor` - 1)"),
    (re.compile(r"got device=(['\"]?)([^'\"\s.]+)\1\. Use quantized=False on \w+"),
     r"got --device \2; leave out --quantized"),
    (re.compile(r"use quantized=False"), "leave out --quantized"),
)


def _flag_names(parser):
    """``{python name: flag as typed}`` for the options and positionals of ``parser``."""
    names = {}
    for action in parser._actions:
        if action.dest in (argparse.SUPPRESS, "help", "cli_parser"):
            continue
        if action.option_strings:
            names[action.dest] = max(action.option_strings, key=len)
        elif not isinstance(action, argparse._SubParsersAction):
            names[action.dest] = action.metavar or action.dest.upper()
    return names


def cli_message(text, parser=None, aliases=None):
    """Reword a library error in the flags of a command (``--overwrite``, ``--key``).

    Parameters
    ----------
    text : str
        The message of the exception.
    parser : argparse.ArgumentParser, optional
        The (sub-)command that ran: its options name the Python arguments.
    aliases : dict, optional
        Python argument (or config key) names whose flag has another name, e.g.
        ``{"label_divisor": "--max-objects"}``; a value that is not a flag
        replaces the backquoted name as it is.

    Returns
    -------
    str
    """
    for pattern, replacement in _PHRASES:
        text = pattern.sub(replacement, text)
    names = _flag_names(parser) if parser is not None else {}
    names.update(aliases or {})
    for name, flag in sorted(names.items(), key=lambda kv: -len(kv[0])):
        if not flag.startswith("-"):
            text = text.replace(f"`{name}`", flag)
            continue
        word = rf"(?<![\w.-]){re.escape(name)}"
        text = re.sub(rf"{word}=True\b", flag, text)
        text = re.sub(rf"{word}=False\b", f"no {flag}", text)
        text = re.sub(rf"{word}=(['\"]?)([^\s,;)'\"]*)\1",
                      lambda m, f=flag: f"{f} {m.group(2)}".rstrip(), text)
        text = text.replace(f"`{name}`", flag)
    return text


def main(argv=None) -> int:
    """Run the ``empanada`` command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code: 0 success, 2 usage or input error, 1 runtime failure.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning(args)
        return _run(args)


def _one_line_warning(args=None):
    """A ``warnings.showwarning`` that prints each message once, on one line.

    Python's default prints the warning's source file and line, once per place
    it is raised from; a command-line user wants the message only, in the flags
    of the command.
    """
    seen = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message) if args is None else _worded(message, args)
        if text not in seen:
            seen.add(text)
            print(f"empanada: warning: {text}", file=sys.stderr)

    return show


def _run(args):
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("empanada: interrupted", file=sys.stderr)
        return 130
    except _USAGE_ERRORS as exc:
        print(f"empanada: error: {_worded(exc, args)}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"empanada: error: {_worded(exc, args)}", file=sys.stderr)
        return 1


def _worded(exc, args):
    return cli_message(str(exc), getattr(args, "cli_parser", None),
                       getattr(args, "cli_aliases", None))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
