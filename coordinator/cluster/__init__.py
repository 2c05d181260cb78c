"""Beyond one host: the Compose stack driven through python-on-whales (`compose`), Slurm job arrays
(`slurm`, with its sbatch template in `templates/`) and Kubernetes manifests (`k8s`).

Each module also holds its `coordinator cluster ...` sub-commands. It rides on these engines and
schedules nothing itself; it may import `store` and `errors`, never the worker, reports or commands.
"""
