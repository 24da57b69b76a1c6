# Industrial positron imaging: phantoms -> simulation -> reconstruction -> datasets -> GAN
# (CT VAE, positron features, training, generation).
# The config is validated here, before any job starts (sim.config.validate_config).
import shlex
import sys

from snakemake.utils import min_version

min_version("8.0")

configfile: "config/config.yaml"

# The stage packages live next to this file: importable here, and in every job (whatever
# environment runs it) through PYTHONPATH set in the jobs' shell prefix.
sys.path.insert(0, workflow.basedir)
shell.prefix(
    "set -euo pipefail; "
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)

from sim.config import ConfigError, validate_config  # noqa: E402

try:
    config = validate_config(config)
except ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}") from None


include: "workflow/rules/common.smk"
include: "workflow/rules/phantoms.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/crosscheck.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        all_phantom_outputs(),
        all_listmode_outputs(),
        all_recon_outputs(),
        all_detectability_outputs(),
        all_dataset_outputs(),
        all_model_outputs(),
    default_target: True
