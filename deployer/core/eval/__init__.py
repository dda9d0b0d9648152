"""`deployer eval`: items and their scorers, targets, statistics, the run folder's bookkeeping
and the report. Pure: answers arrive through the `Asker` seam (deployer.adapters.chat_client),
the run folder through `RunFolder` (deployer.adapters.eval_runs)."""
