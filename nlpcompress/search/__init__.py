"""Recipe search (``nlpcompress search``): a space of recipes, Optuna studies over it, and their reports.

``space`` (recipes with distributions), ``settings`` (the ``search:`` section), ``objectives`` (metrics
from results.json, constraints), ``pruning`` (multi-fidelity), ``study`` (storage, trials), ``report``
(Pareto front, plot, importances), ``cli`` (the command). Needs ``pip install 'nlpcompress[search]'``.
"""
