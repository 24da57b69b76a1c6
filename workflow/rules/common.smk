# Helpers shared by the rules: names of the jobs derived from the validated config.
import json
import math
import shlex

from models.methods import method_needs, run_name_pattern
from pipeline import job_resources
from pipeline.config import selected_datasets
from pipeline.specs import (
    ENHANCE_METHOD,
    ct_dataset_spec,
    downstream_methods,
    downstream_spec,
    enhance_enabled,
    engine_spec,
    enhance_spec,
    evaluate_spec,
    feature_network_spec,
    generate_spec,
    method_runs,
    phantom_names,
    positron_dataset_spec,
    positron_features_spec,
    pretrain_vae_spec,
    realisation_spec,
    recon_spec,
    response_spec,
    scarcity_methods,
    scarcity_spec,
    scarcity_subsets,
    simulate_spec,
    detectability_study_targets,
    statistical_prep_spec,
    split_run,
    thinning_seed,
    train_spec,
    validation_targets,
)
from sim.phantoms.spec import phantom_spec


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    phantom=r"[a-z]+_[0-9][0-9][0-9][0-9]+",
    acquisition=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    engine=r"fast|opengate|gate9|statistical",
    engine_a=r"fast|opengate|gate9|statistical",
    engine_b=r"fast|opengate|gate9|statistical",
    realisation=r"[0-9]+",
    level=r"[0-9]+",
    method=run_name_pattern(),


def all_phantom_outputs():
    """Phantom files of every selected dataset."""
    return [
        f"results/{dataset}/phantoms/{phantom}.h5"
        for dataset in selected_datasets(config)
        for phantom in phantom_names(config, dataset)
    ]


# Requests scaled with the config: pipeline/job_resources.py (measured costs and their margins).
def phantom_mem_mb(wildcards):
    return job_resources.phantom(config, wildcards.dataset).mem_mb


def phantom_runtime(wildcards):
    return job_resources.phantom(config, wildcards.dataset).runtime_min


def simulate_mem_mb(wildcards, threads):
    return job_resources.simulate(config, wildcards.acquisition, threads).mem_mb


def simulate_runtime(wildcards, threads):
    return job_resources.simulate(config, wildcards.acquisition, threads).runtime_min


def reconstruct_mem_mb(wildcards):
    return job_resources.reconstruct(config, wildcards.acquisition).mem_mb


def reconstruct_runtime(wildcards):
    return job_resources.reconstruct(config, wildcards.acquisition).runtime_min


def positron_features_mem_mb(wildcards):
    return job_resources.positron_features(config, wildcards.dataset).mem_mb


def positron_features_runtime(wildcards):
    return job_resources.positron_features(config, wildcards.dataset).runtime_min


def train_mem_mb(wildcards):
    return job_resources.train(config, split_run(wildcards.method)[0]).mem_mb


def train_runtime(wildcards):
    return job_resources.train(config, split_run(wildcards.method)[0]).runtime_min


def train_priority(wildcards):
    """Longest training first (its expected seconds, sim/job_resources.py), so that on few
    cores the trainings pack tightly instead of the longest starting last."""
    return int(job_resources.train_seconds(config, split_run(wildcards.method)[0]))


def pretrain_vae_mem_mb(wildcards):
    return job_resources.pretrain_vae(config).mem_mb


def pretrain_vae_runtime(wildcards):
    return job_resources.pretrain_vae(config).runtime_min


def feature_network_mem_mb(wildcards):
    return job_resources.feature_network(config, wildcards.dataset).mem_mb


def feature_network_runtime(wildcards):
    return job_resources.feature_network(config, wildcards.dataset).runtime_min


def downstream_mem_mb(wildcards):
    return job_resources.downstream(config, wildcards.dataset,
                                    len(downstream_methods(config))).mem_mb


def downstream_runtime(wildcards):
    return job_resources.downstream(config, wildcards.dataset,
                                    len(downstream_methods(config))).runtime_min


def scarcity_mem_mb(wildcards):
    return job_resources.scarcity(config, wildcards.dataset).mem_mb


def scarcity_runtime(wildcards):
    return job_resources.scarcity(config, wildcards.dataset).runtime_min


def scarcity_spec_json(wildcards):
    """What the data-scarcity curve depends on, as JSON."""
    return json.dumps(scarcity_spec(config, wildcards.dataset), sort_keys=True)


def scarcity_targets():
    """The scarcity curve of every selected dataset (run on request)."""
    return [f"results/{d}/eval/scarcity.md" for d in selected_datasets(config)]


#: A subset's folder name under results/{dataset}/scarcity/.
SCARCITY_SUBSET = r"n[0-9][0-9]*_d[0-9][0-9]*"


def scarcity_generated(wildcards):
    """``{subset}/{method}`` -> generated set, for every subset of the curve (``all``: the
    DAG's own set, trained on the whole split) and labelled method."""
    out = {}
    for method in scarcity_methods(config):
        out[f"all/{method}"] = f"results/{wildcards.dataset}/generated/{method}.h5"
        for subset in scarcity_subsets(config, wildcards.dataset):
            out[f"{subset}/{method}"] = (
                f"results/{wildcards.dataset}/scarcity/{subset}/generated/{method}.h5")
    return out


def scarcity_inputs(wildcards):
    """The real set and every generated set the curve's arms use (named by position)."""
    generated = list(scarcity_generated(wildcards).values())
    return {"positron": f"results/{wildcards.dataset}/datasets/positron.h5",
            **{f"generated_{k}": path for k, path in enumerate(generated)}}


def scarcity_generated_args(wildcards):
    """The ``--generated SUBSET/METHOD=PATH`` options of the scarcity job."""
    options = [("--generated", f"{key}={path}")
               for key, path in scarcity_generated(wildcards).items()]
    return " ".join(shlex.join(pair) for pair in options)


def scarcity_train_inputs(wildcards):
    """A generator's inputs on a subset: the subset's image set (and its feature memory),
    the CT set and encoder of the dataset."""
    base = f"results/{wildcards.dataset}"
    needs = method_needs(split_run(wildcards.method)[0])
    inputs = {"positron": f"{base}/scarcity/{wildcards.subset}/datasets/positron.h5",
              "ct": f"{base}/datasets/ct.h5"}
    if "features" in needs:
        inputs["features"] = f"{base}/scarcity/{wildcards.subset}/models/features.h5"
    if "encoder" in needs:
        inputs["encoder"] = f"{base}/models/vae_ct/final.pt"
    return inputs


def scarcity_subset_mem_mb(wildcards):
    return job_resources.scarcity_subset(config, wildcards.dataset).mem_mb


def part_files(wildcards):
    """The mesh files and labelled image of a `part` dataset (none for the other families): a
    changed file re-runs its phantoms, and a cluster job declares what it reads."""
    part = config["datasets"][wildcards.dataset].get("part")
    if not part:
        return []
    meshes = [volume["mesh"] for volume in part["volumes"] if volume.get("mesh")]
    return meshes + ([part["label_image"]] if part.get("label_image") else [])


def phantom_spec_json(wildcards):
    """The config section a phantom depends on, as JSON; a change re-runs only that phantom."""
    return json.dumps(phantom_spec(config, wildcards.dataset, wildcards.phantom), sort_keys=True)


def listmode_output(path):
    """A list-mode output: kept, or temporary when `keep_listmode: false` (deleted once its
    reconstructions are written)."""
    return path if config["keep_listmode"] else temp(path)


def all_listmode_outputs():
    """List-mode files of every phantom and acquisition of every selected dataset (none when
    they are temporary: the reconstructions ask for them)."""
    if not config["keep_listmode"]:
        return []
    return [
        f"results/{dataset}/listmode/{phantom}/{acquisition}.h5"
        for dataset in selected_datasets(config)
        for phantom in phantom_names(config, dataset)
        for acquisition in config["datasets"][dataset]["acquisitions"]
    ]


def simulate_spec_json(wildcards):
    """What a simulation depends on, as JSON; a change re-runs only the affected jobs."""
    spec = simulate_spec(config, wildcards.dataset, wildcards.phantom, wildcards.acquisition)
    return json.dumps(spec, sort_keys=True)


def _engine_of(wildcards):
    """The engine of a simulation job: the ``engine`` wildcard's (cross-check runs) or the
    config's."""
    return getattr(wildcards, "engine", None) or config["engine"]


def simulate_inputs(wildcards):
    """The phantom, and the detector response when the engine is the statistical one."""
    inputs = {"phantom": f"results/{wildcards.dataset}/phantoms/{wildcards.phantom}.h5"}
    if _engine_of(wildcards) == "statistical":
        inputs["response"] = "results/calibration/response.h5"
    return inputs


def simulate_main_inputs(wildcards):
    """:func:`simulate_inputs`, and for the statistical engine the phantom's preparation
    (shared by its acquisitions; the cross-check and the validation make their own)."""
    inputs = simulate_inputs(wildcards)
    if _engine_of(wildcards) == "statistical":
        inputs["prep"] = f"results/{wildcards.dataset}/statistical/{wildcards.phantom}.h5"
    return inputs


def simulate_main_args(wildcards):
    """The simulate rule's ``--response`` and ``--prep`` options (none for Monte Carlo)."""
    if _engine_of(wildcards) != "statistical":
        return ""
    return (simulate_response_arg(wildcards)
            + f" --prep results/{wildcards.dataset}/statistical/{wildcards.phantom}.h5")


def statistical_prep_spec_json(wildcards):
    """What a phantom's statistical preparation depends on, as JSON."""
    return json.dumps(statistical_prep_spec(config, wildcards.dataset, wildcards.phantom),
                      sort_keys=True)


def simulate_response_arg(wildcards):
    """The simulate command's ``--response`` option (empty for the Monte Carlo engines)."""
    if _engine_of(wildcards) != "statistical":
        return ""
    return " --response results/calibration/response.h5"


def response_spec_json(wildcards):
    """What the detector response depends on, as JSON."""
    return json.dumps(response_spec(config), sort_keys=True)


def simulate_spec_json_for_engine(wildcards):
    """The simulate spec with the engine of the ``engine`` wildcard (cross-check runs)."""
    spec = engine_spec(config, wildcards.dataset, wildcards.phantom, wildcards.acquisition,
                       wildcards.engine)
    return json.dumps(spec, sort_keys=True)


def crosscheck_target():
    """The comparison the ``crosscheck`` config section asks for."""
    cc = config["crosscheck"]
    if cc["dataset"] not in config["datasets"]:
        raise WorkflowError(f"crosscheck.dataset: {cc['dataset']!r} is not a dataset of the config")
    a, b = cc["engines"]
    return (f"results/{cc['dataset']}/crosscheck/{cc['phantom']}/{cc['acquisition']}/"
            f"{a}_vs_{b}/crosscheck.md")


def recon_spec_json(wildcards):
    """What a reconstruction depends on, as JSON; a change re-runs the affected jobs."""
    return json.dumps(recon_spec(config, wildcards.dataset), sort_keys=True)


def reconstruct_inputs(wildcards):
    """List-mode and phantom files, and the cached geometry file of the configured mode."""
    base = f"results/{wildcards.dataset}"
    return _recon_inputs(wildcards,
                         f"{base}/listmode/{wildcards.phantom}/{wildcards.acquisition}.h5")


def _recon_inputs(wildcards, listmode):
    base = f"results/{wildcards.dataset}"
    inputs = {"listmode": listmode, "phantom": f"{base}/phantoms/{wildcards.phantom}.h5"}
    recon = config["recon"]
    if recon["mode"] == "2d":
        inputs["geometry"] = f"{base}/recon/system_matrix_2d.h5"
    elif recon["attenuation_correction"]:
        inputs["geometry"] = f"{base}/recon/{wildcards.phantom}/_sensitivity_3d.h5"
    else:
        inputs["geometry"] = f"{base}/recon/sensitivity_3d.h5"
    return inputs


def reconstruct_geometry_arg(wildcards, input):
    """The command-line option that passes the cached geometry file."""
    option = "--system-matrix" if config["recon"]["mode"] == "2d" else "--sensitivity"
    return f"{option} {shlex.quote(input.geometry)}"


def all_recon_outputs():
    """Reconstructed images of every list-mode file of every selected dataset."""
    return [
        f"results/{dataset}/recon/{phantom}/{acquisition}.h5"
        for dataset in selected_datasets(config)
        for phantom in phantom_names(config, dataset)
        for acquisition in config["datasets"][dataset]["acquisitions"]
    ]


def detectability_inputs(wildcards):
    """The defect measures of every reconstruction of a dataset."""
    return [
        f"results/{wildcards.dataset}/recon/{phantom}/{acquisition}_defects.json"
        for phantom in phantom_names(config, wildcards.dataset)
        for acquisition in config["datasets"][wildcards.dataset]["acquisitions"]
    ]


def all_detectability_outputs():
    """The detectability CSV of every selected dataset."""
    return [f"results/{dataset}/recon/detectability.csv" for dataset in selected_datasets(config)]


def positron_dataset_spec_json(wildcards):
    """What the positron image set of a dataset depends on, as JSON."""
    return json.dumps(positron_dataset_spec(config, wildcards.dataset), sort_keys=True)


def positron_dataset_inputs(wildcards):
    """Phantom files and the reconstructions the positron image set is cut from."""
    spec = positron_dataset_spec(config, wildcards.dataset)
    base = f"results/{wildcards.dataset}"
    return [f"{base}/phantoms/{p}.h5" for p in spec["phantoms"]] + [
        f"{base}/recon/{p}/{a}.h5" for p in spec["phantoms"] for a in spec["acquisitions"]
    ]


def ct_dataset_spec_json(wildcards):
    """What the CT image set depends on, as JSON."""
    return json.dumps(ct_dataset_spec(config), sort_keys=True)


def all_dataset_outputs():
    """The positron and CT image sets of every selected dataset."""
    return [
        f"results/{dataset}/datasets/{name}.h5"
        for dataset in selected_datasets(config)
        for name in ("positron", "ct")
    ]


# ------------------------------------------------------------------ generative stage
def train_methods():
    """The generative methods of the config (``train.methods``)."""
    return list(config["train"]["methods"])


def pretrain_vae_spec_json(wildcards):
    """What the CT VAE's pretraining depends on, as JSON."""
    return json.dumps(pretrain_vae_spec(config, wildcards.dataset), sort_keys=True)


def positron_features_spec_json(wildcards):
    """What the positron feature memory depends on, as JSON."""
    return json.dumps(positron_features_spec(config, wildcards.dataset), sort_keys=True)


def train_spec_json(wildcards):
    """What training one method depends on, as JSON (not the other methods' sections)."""
    return json.dumps(train_spec(config, wildcards.dataset, wildcards.method), sort_keys=True)


def generate_spec_json(wildcards):
    """What a generated set depends on, as JSON."""
    return json.dumps(generate_spec(config, wildcards.dataset, wildcards.method), sort_keys=True)


def train_inputs(wildcards):
    """Image sets, and the feature memory and CT encoder for the methods built on them."""
    base = f"results/{wildcards.dataset}"
    needs = method_needs(split_run(wildcards.method)[0])
    inputs = {"positron": f"{base}/datasets/positron.h5", "ct": f"{base}/datasets/ct.h5"}
    if "features" in needs:
        inputs["features"] = f"{base}/models/features.h5"
    if "encoder" in needs:
        inputs["encoder"] = f"{base}/models/vae_ct/final.pt"
    return inputs


def train_input_args(wildcards, input):
    """Command-line options passing the optional inputs of ``train``."""
    return " ".join(f"--{role} {shlex.quote(getattr(input, role))}"
                    for role in ("features", "encoder") if role in input.keys())


def train_gpus(wildcards):
    """GPUs a training job asks a cluster for: one when the config says device: cuda."""
    return 1 if config["device"] == "cuda" else 0


def all_model_outputs():
    """Trained models, generated sets and Table 1 of every method and selected dataset."""
    outputs = []
    for dataset in selected_datasets(config):
        for method in train_methods():
            for run in method_runs(config, method):
                outputs.append(f"results/{dataset}/models/{run}/final.pt")
                outputs.append(f"results/{dataset}/generated/{run}.h5")
        if train_methods():
            outputs.append(f"results/{dataset}/eval/table1.md")
        if downstream_active():
            outputs.append(f"results/{dataset}/eval/downstream.md")
        if enhance_enabled(config, dataset):
            outputs.append(f"results/{dataset}/models/{ENHANCE_METHOD}/final.pt")
            outputs.append(f"results/{dataset}/enhance/enhance.md")
    return outputs


def downstream_active():
    """Whether the downstream test runs: enabled, and a labelled method to test."""
    return bool(config["downstream"]["enabled"] and downstream_methods(config))


def downstream_spec_json(wildcards):
    """What the downstream test depends on, as JSON."""
    return json.dumps(downstream_spec(config, wildcards.dataset), sort_keys=True)


def downstream_inputs(wildcards):
    """The real set and the generated set of every labelled method of the test (of its first
    training run when evaluate.seeds trains several)."""
    base = f"results/{wildcards.dataset}"
    inputs = {"positron": f"{base}/datasets/positron.h5"}
    for method in downstream_methods(config):
        run = method_runs(config, method)[0]
        inputs[f"generated_{method}"] = f"{base}/generated/{run}.h5"
    return inputs


def downstream_method_args(wildcards, input):
    """--generated METHOD=PATH for every labelled method of the test."""
    pairs = [f"{m}={getattr(input, f'generated_{m}')}" for m in downstream_methods(config)]
    return " ".join(f"--generated {shlex.quote(pair)}" for pair in pairs)


def enhance_spec_json(wildcards):
    """What the enhancement table depends on, as JSON."""
    return json.dumps(enhance_spec(config, wildcards.dataset), sort_keys=True)


def feature_network_spec_json(wildcards):
    """What the domain feature network depends on, as JSON."""
    return json.dumps(feature_network_spec(config, wildcards.dataset), sort_keys=True)


def evaluate_spec_json(wildcards):
    """What Table 1 depends on, as JSON."""
    return json.dumps(evaluate_spec(config, wildcards.dataset), sort_keys=True)


def evaluate_inputs(wildcards):
    """Real sets, the feature network, and every method's generated set, model and history."""
    base = f"results/{wildcards.dataset}"
    inputs = {"positron": f"{base}/datasets/positron.h5", "ct": f"{base}/datasets/ct.h5",
              "feature_net": f"{base}/models/feature_net/final.pt"}
    for method in train_methods():
        for run in method_runs(config, method):
            inputs[f"generated_{run}"] = f"{base}/generated/{run}.h5"
            inputs[f"model_{run}"] = f"{base}/models/{run}/final.pt"
            inputs[f"history_{run}"] = f"{base}/models/{run}/history.csv"
    if downstream_active():
        inputs["downstream"] = f"{base}/eval/downstream.json"
    return inputs


def evaluate_method_args(wildcards, input):
    """--generated/--model/--history RUN=PATH for every run of every method."""
    args = []
    for method in train_methods():
        for run in method_runs(config, method):
            for kind in ("generated", "model", "history"):
                path = getattr(input, f"{kind}_{run}")
                args.append(f"--{kind} {shlex.quote(f'{run}={path}')}")
    if "downstream" in input.keys():
        args.append(f"--downstream {shlex.quote(input.downstream)}")
    return " ".join(args)


def train_threads(wildcards):
    """Threads of the training-stage jobs (``train.threads``)."""
    return config["train"]["threads"]


# ------------------------------------------------------------------ engine validation
def _realisation_dir(wildcards, engine):
    return (f"results/{wildcards.dataset}/validation/{wildcards.phantom}/"
            f"{wildcards.acquisition}/{engine}")


def realisation_spec_json(wildcards):
    """The simulate spec of one validation realisation, as JSON."""
    spec = realisation_spec(config, wildcards.dataset, wildcards.phantom,
                            wildcards.acquisition, wildcards.engine,
                            int(wildcards.realisation))
    return json.dumps(spec, sort_keys=True)


def realisation_recon_inputs(wildcards):
    """What a validation realisation's reconstruction reads (as ``reconstruct``'s)."""
    return _recon_inputs(wildcards, f"{_realisation_dir(wildcards, wildcards.engine)}/"
                                    f"listmode_r{wildcards.realisation}.h5")


def validate_phantom_inputs(wildcards):
    """Every realisation's list-mode file and reconstruction of both engines."""
    n = config["validation"]["realisations"]
    inputs = {"phantom": f"results/{wildcards.dataset}/phantoms/{wildcards.phantom}.h5"}
    for role, engine in (("reference", wildcards.engine_a), ("candidate", wildcards.engine_b)):
        folder = _realisation_dir(wildcards, engine)
        inputs[f"{role}_listmode"] = [f"{folder}/listmode_r{k}.h5" for k in range(n)]
        inputs[f"{role}_recon"] = [f"{folder}/recon_r{k}.h5" for k in range(n)]
    return inputs


def level_fraction(wildcards):
    """The share of the counts kept at count level ``level`` of the detectability study."""
    return repr(float(config["detectability_study"]["fractions"][int(wildcards.level)]))


def level_seed(wildcards):
    """The seed of one phantom's thinning to one count level."""
    return thinning_seed(config, wildcards.dataset, wildcards.phantom, int(wildcards.level))


def level_recon_inputs(wildcards):
    """What a study level's reconstruction reads (as ``reconstruct``'s)."""
    return _recon_inputs(wildcards, f"results/{wildcards.dataset}/detectability/"
                                    f"l{wildcards.level}/listmode/{wildcards.phantom}/"
                                    f"{wildcards.acquisition}.h5")


def _study_levels():
    study = config["detectability_study"]
    pairs = detectability_study_targets(config)
    return [(f"results/{dataset}/detectability/l{k}/recon/{phantom}/{study['acquisition']}"
             ".h5", k)
            for dataset, phantom in pairs for k in range(len(study["fractions"]))]


def detectability_study_inputs(wildcards):
    """Every level's reconstruction of every study phantom (an input function: the section
    is checked when its target is asked for)."""
    return {"recon": [path for path, _ in _study_levels()]}


def detectability_study_levels(wildcards):
    """The count level of each study reconstruction, in the inputs' order."""
    return " ".join(str(k) for _, k in _study_levels())


def detectability_study_spec_json(wildcards):
    """The ``detectability_study`` section, as JSON."""
    return json.dumps(config["detectability_study"], sort_keys=True)


def validation_tables(wildcards):
    """The per-phantom tables of the ``validation`` section (an input function: the section
    is checked when its target is asked for, not on every run)."""
    v = config["validation"]
    a, b = v["engines"]
    return [f"results/{dataset}/validation/{phantom}/{v['acquisition']}/{a}_vs_{b}/"
            "validation.csv" for dataset, phantom in validation_targets(config)]
