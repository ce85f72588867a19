"""The command line as Hydra reads it: which items are flags, which are overrides, and the
override sets that stand for every job of a sweep."""

from __future__ import annotations

FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd", "--experimental-rerun"}
MODE_FLAGS = {"-m": "multirun", "--multirun": "multirun", "--cfg": "cfg", "-c": "cfg", "--info": "info", "-i": "info",
              "--shell-completion": "shell", "-sc": "shell"}
SKIP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc", "--version"}


def override_positions(args: list[str]) -> list[int]:
    """The positions in ``args`` that hold overrides (flags and a flag's value, as ``job``
    in ``--cfg job``, are not overrides)."""
    positions, skip = [], False
    for index, item in enumerate(args):
        if skip:
            skip = False
        elif item in FLAGS_WITH_VALUE:
            skip = True
        elif not item.startswith("-"):
            positions.append(index)
    return positions


def split_flags(args: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun, skip): the override strings, whether -m was given, and whether a
    flag asks Hydra for help/info instead of a run (then nothing is checked)."""
    overrides = [args[index] for index in override_positions(args)]
    multirun = any(item in ("-m", "--multirun") for item in args)
    skip = any(item in SKIP_FLAGS for item in args)
    return overrides, multirun, skip


def job_override_sets(overrides: list[str]) -> list[list[str]]:
    """The override lists to check for a (possible) sweep: every value of every swept key
    once, the other keys at their first value. Linear in the number of values, not a product."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices: list[list[str]] = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except Exception:  # interval sweeps have no finite list; leave them to Hydra
                values = []
            choices.append([f"{key}={value}" for value in values] or [override.input_line])
        else:
            choices.append([override.input_line])
    first = [options[0] for options in choices]
    sets = [first]
    for position, options in enumerate(choices):
        for option in options[1:]:
            sets.append(first[:position] + [option] + first[position + 1:])
    return sets
