"""Reading jobs: every run dir under the given paths, with its status, error, Hydra
overrides, composed config and ``metrics.json``.

A job whose ``metrics.json`` cannot be used (corrupt JSON, missing in a job whose status says
done, or values of the wrong type) gets the status ``unreadable`` and the reason in
``Job.unreadable``: its trials are missing, which the report says, never "done" with n = 0."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from deepleak.errors import DeepleakError
from deepleak.report.constants import METRICS, REPORT_NAME, UNREADABLE
from deepleak.runs import ERROR_FILE, METRICS_FILE, STATUS_FILE

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One run dir: where it is, how it ended, what it was asked for and what it measured.
    ``unreadable``: why its metrics.json cannot be used (then ``status`` is ``unreadable``
    and ``metrics`` None), else None."""

    path: Path
    status: str
    error: str | None
    overrides: dict[str, str]
    choices: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    unreadable: str | None = None

    @property
    def records(self) -> list[dict[str, Any]]:
        """The per-trial records in ``metrics.json`` (none when it is missing)."""
        return list((self.metrics or {}).get("per_trial") or [])

    @property
    def seed(self) -> str | None:
        """The seed as text (from metrics.json, else the config), None if unknown."""
        if self.metrics and self.metrics.get("seed") is not None:
            return _text(self.metrics["seed"])
        return self.value("seed")

    def value(self, key: str) -> str | None:
        """The job's value for an override key: the override if given, else the config group
        choice, else the scalar in the composed config; None when none of these has it."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return _text(self.choices[key])
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return None if isinstance(node, (dict, list)) else _text(node)


def _text(value: Any) -> str:
    """A config scalar written as it would be in an override (``true``, ``null``, ``4``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _parse_overrides(lines: Iterable[Any]) -> dict[str, str]:
    """``["batch_size=2", "+scenario=fedsgd"]`` -> ``{"batch_size": "2", "scenario": "fedsgd"}``.

    The ``+``/``++`` prefixes are dropped (appending a key is the same setting); a deletion
    ``~key`` is kept under the key with the value ``~``.
    """
    result: dict[str, str] = {}
    for line in lines:
        text = str(line)
        key, _, value = text.partition("=")
        deleted = key.startswith("~")
        key = key.lstrip("+~").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        result[key] = "~" if deleted else value
    return result


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError) as error:
        log.warning("cannot read %s: %s", path, error)
        return None


def read_job(path: Path) -> Job:
    """Read one run dir; unreadable pieces are logged and left empty, never fatal."""
    path = Path(path)
    status_file = path / STATUS_FILE
    status = status_file.read_text().strip() if status_file.is_file() else ""
    error_file = path / ERROR_FILE
    error = None
    if error_file.is_file():
        lines = error_file.read_text().strip().splitlines()
        error = lines[0].strip() if lines else None

    metrics, unreadable = None, None
    if (path / METRICS_FILE).is_file():
        try:
            metrics = json.loads((path / METRICS_FILE).read_text())
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            unreadable = f"corrupt JSON: {exc}" if isinstance(exc, ValueError) else f"cannot be read: {exc}"
        else:
            unreadable = _wrong_types(metrics)
    elif status == "done":
        unreadable = "missing"
    if unreadable:
        log.warning("unreadable %s: %s", path / METRICS_FILE, unreadable)
        if status:
            unreadable += f"; status file: {status}"
        metrics, status = None, UNREADABLE
    if not status:
        status = "done" if metrics and metrics.get("trials_done", 0) >= metrics.get("trials", 1) else "unknown"

    hydra_dir = path / ".hydra"
    overrides = _parse_overrides(_load_yaml(hydra_dir / "overrides.yaml") or [])
    hydra_cfg = _load_yaml(hydra_dir / "hydra.yaml") or {}
    choices = (((hydra_cfg.get("hydra") or {}).get("runtime") or {}).get("choices") or {})
    choices = {k: v for k, v in choices.items() if not k.startswith("hydra/")}
    config = _load_yaml(hydra_dir / "config.yaml") or {}
    return Job(path, status, error, overrides, choices, config if isinstance(config, dict) else {}, metrics, unreadable)


def _wrong_types(metrics: Any) -> str | None:
    """Why parsed metrics.json cannot be used (not an object, trial counts that are not
    integers, per-trial records that are not objects, a reported metric that is neither a
    number nor null), None when it can."""
    if not isinstance(metrics, dict):
        return f"not a JSON object but {_kind(metrics)}"
    for key in ("trials", "trials_done"):
        if key in metrics and not _integer(metrics[key]):
            return f"{key} is {_kind(metrics[key])}, not an integer"
    records = metrics.get("per_trial")
    if records is None:
        return None
    if not isinstance(records, list):
        return f"per_trial is {_kind(records)}, not a list"
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            return f"per_trial[{i}] is {_kind(record)}, not an object"
        for key in METRICS:
            value = record.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                return f"per_trial[{i}].{key} is {_kind(value)}, not a number"
    return None


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """``a str ('abc')``: a value's JSON type for a message, with a short excerpt."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    excerpt = json.dumps(value)
    return f"{names.get(type(value), type(value).__name__)} ({excerpt[:40]}{'...' if len(excerpt) > 40 else ''})"


def _numbered(name: str, stem: str) -> bool:
    """``stem`` or ``stem-N``."""
    head, _, tail = name.partition("-")
    return head == stem and (not tail or tail.isdigit())


def _skipped_dir(name: str) -> bool:
    """Not searched for jobs: Hydra's record, images, reports this module wrote
    (``report``, ``report-N``) and the unfinished attempts a resumed sweep moved aside
    (``previous-N``, see :func:`deepleak.runs.archive_previous`): the rerun replaces them."""
    return name in (".hydra", "images") or _numbered(name, REPORT_NAME) or (
        name.startswith("previous-") and _numbered(name, "previous"))


def find_jobs(paths: Iterable[str | Path]) -> list[Job]:
    """Every job dir under ``paths`` (each path may itself be a job), in path order.

    A job dir holds ``metrics.json`` or ``status``; see :func:`_skipped_dir` for the
    folders that are not searched.
    """
    found: dict[Path, None] = {}
    for root in paths:
        root = Path(root)
        if not root.is_dir():
            raise DeepleakError(f"no such directory: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not _skipped_dir(d))
            if METRICS_FILE in filenames or STATUS_FILE in filenames:
                found.setdefault(Path(dirpath).resolve(), None)
    return [read_job(p) for p in found]
