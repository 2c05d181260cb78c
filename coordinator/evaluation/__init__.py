"""The final evaluation: the answer to "do these models get better as they get bigger?".

Owns the immutable protocol (`protocol`), which configurations are re-trained and as which ledger
work items (`plan`), the baselines (`baselines`), the block bootstrap (`bootstrap`), the per
horizon verdict (`verdict`) and turning stored runs into results (`summary`). The re-training
itself runs in the worker (worker/evaluate.py), pulled from the ledger like any trial. May import
`lifecycle`, `studies`, `data` and `store`; never the worker, reports or commands.
"""
