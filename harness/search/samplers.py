"""Samplers of a search, by name (``--sampler``), each reseeded per trial so that a resumed or
parallel study draws what a single run would."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState


def _tpe(seed: int | None) -> optuna.samplers.BaseSampler:
    # multivariate + group: per-layer keys appear only for some depths (a dynamic space).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
}


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` of a search seeded ``seed`` (``SeedSequence`` mixes the two:
    searches seeded S and S+1 do not draw shifted copies of one sequence)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Delegates each trial to a sampler of its own, seeded from the search's seed and the
    trial's number.

    Proposals then never depend on which process asks: processes sharing a study hold different
    trial numbers, so they never repeat each other's proposals, while ``--seed`` still fixes
    every trial's random numbers, across resumes too."""

    def __init__(self, make: Callable[[int | None], optuna.samplers.BaseSampler],
                 seed: int | None) -> None:
        self._make, self._seed = make, seed
        self._number: int | None = None
        self._sampler: optuna.samplers.BaseSampler | None = None

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        # Built at the trial's ``before_trial`` (Optuna calls it from ``Trial.__init__``) and
        # kept for its parameters, which are sampled lazily afterwards, and its ``after_trial``.
        if trial.number != self._number:
            seed = None if self._seed is None else trial_seed(self._seed, trial.number)
            self._number, self._sampler = trial.number, self._make(seed)
        return self._sampler

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, optuna.distributions.BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, optuna.distributions.BaseDistribution]
                        ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        if self._sampler is not None:
            self._sampler.reseed_rng()
