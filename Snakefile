# Industrial positron imaging: phantoms -> simulation -> reconstruction -> datasets -> GAN
# (CT VAE, positron features, training, generation).
# The config is validated here, before any job starts (pipeline.config.validate_config).
import os
import shlex
import sys

from snakemake.utils import min_version
from snakemake_interface_executor_plugins.settings import DeploymentMethod

min_version("8.0")

configfile: "config/config.yaml"

# The stage packages live next to this file: importable here, and in every job (whatever
# environment runs it) through PYTHONPATH set in the jobs' shell prefix. Without --sdm
# conda/apptainer, every rule's `python` is the interpreter running Snakemake (the venv's,
# even when `.venv/bin/snakemake` is called without activating the venv), never whatever
# `python` comes first on PATH.
sys.path.insert(0, workflow.basedir)
_own_env = not ({DeploymentMethod.CONDA, DeploymentMethod.APPTAINER}
                & set(workflow.deployment_settings.deployment_method))
shell.prefix(
    "set -euo pipefail; "
    + (f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH; " if _own_env else "")
    + f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)

from pipeline.config import ConfigError, validate_config  # noqa: E402

try:
    config = validate_config(config)
except ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}") from None


include: "workflow/rules/common.smk"
include: "workflow/rules/phantoms.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/crosscheck.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/detectability.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/scarcity.smk"


rule all:
    input:
        all_phantom_outputs(),
        all_listmode_outputs(),
        all_recon_outputs(),
        all_detectability_outputs(),
        all_dataset_outputs(),
        all_model_outputs(),
    default_target: True
