"""Federated-learning scenarios: the client's side, turning a private batch into what it shares."""

from deepleak.scenarios.base import Observation, PrivateBatch, Recipe
from deepleak.scenarios.fedavg import FedAvg
from deepleak.scenarios.fedsgd import FedSGD
from deepleak.scenarios.imported import Imported

__all__ = ["FedAvg", "FedSGD", "Imported", "Observation", "PrivateBatch", "Recipe"]
