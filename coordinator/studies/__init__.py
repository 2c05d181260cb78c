"""Studies: what a study is, before anything runs.

Owns the immutable study spec (`spec`), the architecture and its exact parameter count
(`architecture`), the search space and how a trial samples it (`search_space`), the presets and the
constants every study shares (`presets`), choosing datasets and studies by name (`datasets`,
`globs`), the trial metrics (`metrics`), and planning a study matrix with every gate run before
anything is written (`planning`). May import `data`, `store`, `errors` and `version`; registering
the planned studies in Optuna and the ledger is `lifecycle.registration`'s job.
"""
