"""Every tag and artifact name autopeft writes to MLflow, here only: the store's vocabulary,
read back by every command that opens a search."""

ROLE = "autopeft.role"                # "search" on the parent run, "trial" on a child
STATUS = "autopeft.status"            # running | completed | stopped | failed | interrupted
FEASIBLE = "autopeft.feasible"        # "false" on a completed trial that breaks an outcome constraint
PARETO = "autopeft.pareto"            # "true" on the front's members once the search ends
OBJECTIVES = "autopeft.objectives"    # JSON [[name, direction, floor], ...] on the parent
TRIAL_NUMBER = "autopeft.trial_number"
FAILURE = "autopeft.failure"          # why a trial, retraining or search failed (one line)
#: what FAILURE was named before: read from searches stored by earlier versions
LEGACY_FAILURE = "autopeft.error"
NODE = "autopeft.node"                # the Ray node (its IP address) a trial ran on
DEVICE = "autopeft.device"            # the device a trial trained on, and why ("cpu: no CUDA device ...")
GPUS = "autopeft.gpus"                # the GPU ids Ray assigned a trial ("" for none)
EVALUATES = "autopeft.evaluates"      # on an evaluation run: the run id of the trial it retrains
REUSED = "autopeft.reused"            # "true" on an evaluation run whose scores are its trial's own
BASELINE = "autopeft.baseline"        # on a baseline run (role "baseline"): which hand-made configuration
DRIVER = "autopeft.driver"            # on the parent: JSON {host, pid, started} of the driver running it
JOURNAL = "autopeft.journal"          # on the parent: the path of its journal (``--resume`` reads it)
RESUMES = "autopeft.resumes"          # on the parent: how many times it was resumed
ATTEMPTS = "autopeft.attempts"        # on a trial rerun after a crash: how many times it started
CONFIG_ARTIFACT = "search_config.json"  # the search's SearchConfig, for `autopeft evaluate`
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"          # a run's description: the parent's holds the front table
# MLflow 3's UI opens an experiment without a kind in its GenAI mode (traces, "No data");
# this kind opens it on its runs.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
