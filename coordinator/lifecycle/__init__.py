"""The life of every unit of work, in our own PostgreSQL tables (never imports torch or `worker/`).

One job per module:

- `settings`: liveness settings (heartbeat interval, grace period, retries) from flags and env.
- `reconnect`: surviving dropped connections and database restarts (`with_reconnect`).
- `ledger`: the kinds of work and `enqueue_items`, the one way work enters the ledger (its tables,
  `work_items`, `attempts`, `study_amendments`, `device_leases`, are in coordinator.store.tables).
- `registration`: registering planned studies (Optuna study, spec row, search slots).
- `amendments`: extending or cancelling a study after creation.
- `claims`: claiming the next item (one transaction, row locks with SKIP LOCKED), heartbeats.
- `reaper`: failing attempts that lost their worker, stalled or ran out of time, and retrying them.
- `outcomes`: finishing an attempt (ledger row, `trial_records`, epochs) and late results.
- `optuna_adapter`: the only module that talks to Optuna for the trial lifecycle (ask, tell,
  enqueue_trial, report, should_prune), through its public API only.

Work items: a study registers one `search` item per slot of its target; other kinds (for example
`evaluation`) enter through `ledger.enqueue_items` and travel the same claim, heartbeat, reap and
retry road. The slot rule (what counts towards a target) is the `work_counts` view in
sql/15_work_counts.sql, read by the claims and by every read-model view.

May import `studies`, `data`, `store`, `errors` and `version`; never evaluation, reports,
cluster or commands.
"""
