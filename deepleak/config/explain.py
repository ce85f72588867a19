"""One sentence for a config error raised by Hydra or OmegaConf, and the keys that moved."""

from __future__ import annotations

import re

# Keys that moved: an old key on the command line (or in a user's own YAML) is named with its
# new one instead of being reported as unknown.
RENAMED = {
    "labels.wrong": "wrong_labels",
    "scenario.batch_size": "scenario.local_batch_size",
}


def renamed(key: str, command: str = "attack") -> str | None:
    """The sentence for a key that moved (``labels.wrong`` -> ``wrong_labels``), else None."""
    key = key.lstrip("+~")
    if command == "attack" and key in RENAMED:
        return f"{key} is now {RENAMED[key]}: write {RENAMED[key]}=..."
    return None


def explain(error: BaseException, command: str = "attack") -> str:
    """One sentence for a config error raised by Hydra or OmegaConf."""
    text = str(error)
    cause = error.__cause__ or error.__context__
    while cause is not None and not str(text).strip():
        text, cause = str(cause), cause.__cause__
    full = text + "\n" + (str(cause) if cause else "")
    match = re.search(r"Could not (?:load|find) 'hydra/launcher/([^']+)'", full)
    if match:
        plugin = {"submitit_slurm": "hydra-submitit-launcher", "submitit_local": "hydra-submitit-launcher",
                  "joblib": "hydra-joblib-launcher", "ray": "hydra-ray-launcher"}.get(match.group(1))
        hint = f": pip install {plugin}" if plugin else ""
        return f"the launcher plugin for hydra/launcher={match.group(1)} is not installed{hint}"
    match = re.search(r"Could not find '([^']+)/([^']+)'", full)
    if match:
        group, option = match.groups()
        options = re.findall(r"^\t(\S+)$", full, flags=re.M)
        choices = f"; choose one of {', '.join(options)}" if options else ""
        return f"unknown option {group}={option}{choices}"
    match = re.search(r"Key '([^']+)' (?:is not in struct|not in '[^']+')", full)
    if match:
        key = re.search(r"full_key: (\S+)", full)
        name = key.group(1) if key else match.group(1)
        return renamed(name, command) or (
            f"unknown config key '{name}' (check its spelling; `deepleak {command} --cfg job` lists all keys)")
    match = re.search(r"Value '([^']*)' (?:of type '[^']+' )?could not be converted to (\w+)", full)
    if match:
        key = re.search(r"full_key: (\S+)", full)
        name = key.group(1) if key else "a value"
        return f"{name} must be of type {match.group(2).lower()}, got '{match.group(1)}'"
    if re.search(r"Invalid value assigned: \w+ is not a ListConfig", full):
        key = re.search(r"full_key: (\S+)", full)
        name = key.group(1) if key else "the value"
        return f"{name} must be a list, e.g. {name}=[0,5]"
    match = re.search(r"(?:Could not append to config\. An item is already at|Multiple values for) '?([\w/.]+)'?", full)
    if match:
        key = match.group(1).rstrip(".")
        return f"{key} is set twice; give it once (use {key}=... to change it)"
    first = next((line.strip() for line in full.splitlines() if line.strip()), type(error).__name__)
    return first
