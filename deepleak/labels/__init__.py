"""Label restoration methods; each sees only an Observation (see deepleak.scenarios.base)."""

from deepleak.labels.idlg import IDLG
from deepleak.labels.oracle import Oracle
from deepleak.labels.zeroshot import ZeroShot

__all__ = ["IDLG", "Oracle", "ZeroShot"]
