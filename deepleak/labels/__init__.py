"""Label restoration methods; each sees only an Observation (see deepleak.scenarios.base)."""

from deepleak.labels.adaptive import Adaptive
from deepleak.labels.feature_fit import FeatureFit
from deepleak.labels.gradinversion import GradInversion
from deepleak.labels.idlg import IDLG
from deepleak.labels.ilrg import ILRG
from deepleak.labels.llg import LLG
from deepleak.labels.oracle import Oracle
from deepleak.labels.zeroshot import ZeroShot
from deepleak.labels.zeroshot_plus import ZeroShotPlus

__all__ = ["Adaptive", "FeatureFit", "GradInversion", "IDLG", "ILRG", "LLG", "Oracle", "ZeroShot", "ZeroShotPlus"]
