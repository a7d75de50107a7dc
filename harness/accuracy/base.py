"""The accuracy objective's interface: estimators plug in by kind, as ``KIND:ARGUMENT``.

``proxy:NAME`` scores the built model without training (``proxies.py``), ``train:DATASET``
trains it briefly on real images (``training.py``), ``table:FILE`` looks accuracies up in a
table the user brings (``table.py``). Each kind registers a factory with
``@register_estimator_kind``; ``get_estimator("proxy:dss")`` builds one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from harness.config import CandidateConfig
from harness.errors import ConfigError, shorten
from harness.models import VisionTransformer

if TYPE_CHECKING:
    from harness.space import SearchSpace

# Called with (step, intermediate accuracy) by estimators that improve over time (training), so a
# study can stop a candidate that is clearly behind; it raises to stop.
ReportIntermediate = Callable[[int, float], None]


class BaseAccuracyEstimator(abc.ABC):
    """Scores a candidate; a higher score must mean a more accurate model is expected.

    Implementations are deterministic for a given model and seed and must not change the model
    they are given.
    """

    kind: ClassVar[str]
    # Scores candidates of one space, which ``prepare`` must be given first (a supernet's).
    needs_space: ClassVar[bool] = False
    # Scores the candidate with its precision applied, as measured (else: the fp32 model, which
    # sees token reduction and sparsity masks but not the effect of lower precision).
    scores_as_measured: ClassVar[bool] = False
    # The random seed the scores depend on (initialisation, batch order); None: they depend on none.
    seed: int | None = None

    def __init__(self, argument: str) -> None:
        self.argument = argument

    @property
    def spec(self) -> str:
        """How the command line names this estimator: ``proxy:dss``."""
        return f"{self.kind}:{self.argument}"

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """One line for reports: what the score is."""

    @abc.abstractmethod
    def estimate(self, model: VisionTransformer, config: CandidateConfig,
                 report: ReportIntermediate | None = None) -> float:
        """The score of ``model``, built from ``config``."""

    def prepare(self, space: SearchSpace,
                on_progress: Callable[[str], None] | None = None) -> None:
        """Get ready to score candidates of ``space``, before the first one (a supernet is
        trained or loaded here); ``on_progress`` receives one-line progress messages."""

    def fingerprint(self) -> str | None:
        """What the scores depend on besides the candidate and the seed, as a digest (a
        supernet's weights); None when nothing else. A stored score with another fingerprint
        is out of date."""
        return None

    def with_seed(self, seed: int) -> BaseAccuracyEstimator:
        """The same estimator with another random seed, to see how much its scores owe to the seed
        (rank-check's noise ceiling). Only for estimators whose ``seed`` is not None."""
        raise NotImplementedError(f"{self.spec} has no random seed to change")

    def record(self, model: VisionTransformer, config: CandidateConfig,
               report: ReportIntermediate | None = None) -> dict[str, Any]:
        """What a trial stores about its accuracy: ``value`` (the score), and whatever else the
        estimator can say (a held-out loss, where it came from)."""
        return {"value": self.estimate(model, config, report)}

    def metadata(self) -> dict[str, Any]:
        """What a study records once about where its accuracies come from (after ``prepare``)."""
        return {"spec": self.spec, "description": self.description,
                "scores_as_measured": self.scores_as_measured}


ESTIMATOR_KINDS: dict[str, Callable[[str], BaseAccuracyEstimator]] = {}
KIND_USAGE: dict[str, str] = {}  # kind → "proxy:NAME (dss, params, ...)" for error messages


def register_estimator_kind(kind: str, usage: Callable[[], str]):
    """Register ``factory(argument) -> estimator`` for ``KIND:ARGUMENT`` specs."""

    def register(factory: Callable[[str], BaseAccuracyEstimator]):
        ESTIMATOR_KINDS[kind] = factory
        KIND_USAGE[kind] = usage
        return factory

    return register


def valid_estimators() -> str:
    return ", ".join(usage() for usage in KIND_USAGE.values())


def get_estimator(spec: str) -> BaseAccuracyEstimator:
    """The estimator ``spec`` names; one-line ``ConfigError`` naming the valid ones otherwise."""
    kind, _, argument = spec.partition(":")
    if kind not in ESTIMATOR_KINDS or not argument:
        raise ConfigError(f"unknown accuracy estimator {shorten(spec)}; valid: "
                          f"{valid_estimators()}")
    return ESTIMATOR_KINDS[kind](argument)
