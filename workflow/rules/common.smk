# Helpers shared by the rules: names of the jobs derived from the validated config.
import json

from sim.config import phantom_names, phantom_spec, selected_datasets


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    phantom=r"[a-z]+_[0-9][0-9][0-9][0-9]+",


def all_phantom_outputs():
    """Phantom files of every selected dataset."""
    return [
        f"results/{dataset}/phantoms/{phantom}.h5"
        for dataset in selected_datasets(config)
        for phantom in phantom_names(config, dataset)
    ]


def phantom_spec_json(wildcards):
    """The config section a phantom depends on, as JSON; a change re-runs only that phantom."""
    return json.dumps(phantom_spec(config, wildcards.dataset, wildcards.phantom), sort_keys=True)
