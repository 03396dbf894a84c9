"""Search spaces over the training config of segment-everything MobileSAM, for Optuna.

A space is a :class:`SearchSpace`: a checked list of parameters, each named by the dotted path
of the config key it sets (``train.loss_weights.focal``, ``dataset.grid_points``,
``distillation.lambda_schedule.gamma``). Calling the space with an ``optuna.Trial`` samples it
define-by-run, so λ-schedule parameters are sampled only for the schedule type drawn.

Typical use by a search::

    space = get_space("full")               # or load_space("space.yaml")
    validate_space(space, base_config)      # before any trial runs
    searcher = OptunaSearch(space=space, points_to_evaluate=[base_values(space, base_config)])
    ...
    config = apply_params(base_config, trial_params)   # inside each trial

With conditional parameters, create the TPE sampler with ``multivariate=True, group=True``
(Optuna's ``TPESampler``): plain multivariate TPE models only the parameters that every trial
samples and draws the conditional ones independently.

Named spaces are in :data:`SPACES`: ``loss_weights``, ``grid``, ``lambda_schedule`` and
``full``. The YAML form is described in ``search_spaces/_yaml.py``. This package imports
neither torch nor Ray.
"""

from search_spaces._base_config import apply_params, base_values
from search_spaces._errors import SearchSpaceError
from search_spaces._keys import TUNABLE_KEYS, TunableKey
from search_spaces._named import SPACES, get_space
from search_spaces._params import CategoricalParam, FloatParam, IntParam
from search_spaces._preview import describe_space, sample_configs, sample_params
from search_spaces._space import SearchSpace
from search_spaces._validation import validate_space
from search_spaces._yaml import load_space, parse_space

__all__ = [
    "SPACES",
    "TUNABLE_KEYS",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "SearchSpace",
    "SearchSpaceError",
    "TunableKey",
    "apply_params",
    "base_values",
    "describe_space",
    "get_space",
    "load_space",
    "parse_space",
    "sample_configs",
    "sample_params",
    "validate_space",
]
