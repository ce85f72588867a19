"""The one rewrite of the command line before Hydra sees it: ``+group=option`` for a group
that the primary config already chooses becomes ``group=option``.

Why: the primary config's defaults list chooses every group, ``scenario: fedsgd`` and
``experiment: null`` included, so that a config composed through Hydra's compose API is
complete. Hydra 1.3 then refuses the append ``+scenario=fedavg`` ("Multiple values for
scenario"), the form users type (as they type ``+experiment=paper_fedavg``, lightning-hydra-
template's spelling). For such a group the append and the plain override mean the same
choice, so the append is passed on as the plain override. Nothing else changes: other
appends (``+attack.new_key=1``, ``+scenario@pkg=...``), deletions and every flag pass through
as given.
"""

from __future__ import annotations

import functools

from deepleak.config.argv import override_positions


@functools.cache
def primary_groups(config_name: str = "config") -> frozenset[str]:
    """The config groups the primary config ``conf/<config_name>.yaml`` chooses in its
    defaults list (read by Hydra's own config repository)."""
    from hydra._internal.config_repository import ConfigRepository  # noqa: PLC0415
    from hydra._internal.utils import create_config_search_path  # noqa: PLC0415
    from hydra.core.default_element import GroupDefault  # noqa: PLC0415

    from deepleak.config.schema import config_dir  # noqa: PLC0415

    repository = ConfigRepository(config_search_path=create_config_search_path(str(config_dir())))
    primary = repository.load_config(config_name)
    defaults = primary.defaults_list if primary is not None else []
    return frozenset(entry.group for entry in defaults or [] if isinstance(entry, GroupDefault))


def chosen_group_appends(args: list[str], config_name: str = "config") -> list[str]:
    """``args`` (overrides and flags) with every ``+group=value`` whose group the primary
    config already chooses written as ``group=value`` (sweeps included: ``+scenario=a,b``
    -> ``scenario=a,b``). Read with Hydra's OverridesParser; an override it cannot parse is
    left as given, for the checks to report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415

    groups = primary_groups(config_name)
    parser = OverridesParser.create()
    result = list(args)
    for index in override_positions(args):
        try:
            override = parser.parse_override(args[index])
        except Exception:  # noqa: BLE001  (reported by the checks, in one sentence)
            continue
        if override.is_add() and override.package is None and override.key_or_group in groups:
            result[index] = f"{override.key_or_group}={override.get_value_string()}"
    return result
