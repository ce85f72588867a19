"""deepleak's configuration, one job per module:

- :mod:`~deepleak.config.schema`: the attack's schema, the ``scaled`` and run-dir resolvers;
- :mod:`~deepleak.config.train`: the train command's schema;
- :mod:`~deepleak.config.overrides`: the one rewrite of the command line (``+group=x`` for
  a group the primary config chooses);
- :mod:`~deepleak.config.argv`: flags and overrides on the command line, sweeps;
- :mod:`~deepleak.config.checks`: the checks before any work (compose, constructor types);
- :mod:`~deepleak.config.explain`: one sentence for a Hydra/OmegaConf error;
- :mod:`~deepleak.config.build`: ``make``, instantiate with the user's one sentence.

The names used across the package are re-exported here.
"""

from deepleak.config.argv import FLAGS_WITH_VALUE, job_override_sets, split_flags
from deepleak.config.build import make, make_defence
from deepleak.config.checks import check_types, precheck
from deepleak.config.explain import RENAMED, explain
from deepleak.config.overrides import chosen_group_appends, primary_groups
from deepleak.config.schema import (
    DeepleakConfig,
    config_dir,
    register,
    scaled,
)

__all__ = [
    "FLAGS_WITH_VALUE",
    "RENAMED",
    "DeepleakConfig",
    "check_types",
    "chosen_group_appends",
    "config_dir",
    "explain",
    "job_override_sets",
    "make",
    "make_defence",
    "precheck",
    "primary_groups",
    "register",
    "scaled",
    "split_flags",
]
