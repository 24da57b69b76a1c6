# The data-scarcity curve, run on request: `snakemake --cores 2 scarcity_curve` (the
# `scarcity` config section). Each subset of training phantoms gets its own image set, and
# the labelled generators are trained and sampled on it by the rules of train.smk with the
# subset's paths.


wildcard_constraints:
    subset=SCARCITY_SUBSET,


rule scarcity_subset:
    """The image set of one subset: the training split restricted to its phantoms."""
    input:
        positron="results/{dataset}/datasets/positron.h5",
    output:
        "results/{dataset}/scarcity/{subset}/datasets/positron.h5",
    params:
        spec=scarcity_spec_json,
    log:
        "logs/scarcity_subset/{dataset}/{subset}.log",
    benchmark:
        "benchmarks/out/scarcity_subset/{dataset}/{subset}.tsv"
    threads: 1
    resources:
        mem_mb=scarcity_subset_mem_mb,
        runtime=10,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models scarcity-subset --spec {params.spec:q} --positron {input.positron:q}"
        " --subset {wildcards.subset} --out {output:q} --overwrite 2> {log:q}"


use rule positron_features as scarcity_features with:
    input:
        positron="results/{dataset}/scarcity/{subset}/datasets/positron.h5",
    output:
        "results/{dataset}/scarcity/{subset}/models/features.h5",
    log:
        "logs/scarcity_features/{dataset}/{subset}.log",
    benchmark:
        "benchmarks/out/scarcity_features/{dataset}/{subset}.tsv"


use rule train as scarcity_train with:
    input:
        unpack(scarcity_train_inputs),
    output:
        final="results/{dataset}/scarcity/{subset}/models/{method}/final.pt",
        history="results/{dataset}/scarcity/{subset}/models/{method}/history.csv",
        samples="results/{dataset}/scarcity/{subset}/models/{method}/samples.png",
        losses="results/{dataset}/scarcity/{subset}/models/{method}/losses.png",
    params:
        spec=train_spec_json,
        optional=train_input_args,
        out_dir="results/{dataset}/scarcity/{subset}/models/{method}",
    log:
        "logs/scarcity_train/{dataset}/{subset}/{method}.log",
    benchmark:
        "benchmarks/out/scarcity_train/{dataset}/{subset}/{method}.tsv"


use rule generate as scarcity_generate with:
    input:
        model="results/{dataset}/scarcity/{subset}/models/{method}/final.pt",
        positron="results/{dataset}/scarcity/{subset}/datasets/positron.h5",
        ct="results/{dataset}/datasets/ct.h5",
    output:
        "results/{dataset}/scarcity/{subset}/generated/{method}.h5",
    log:
        "logs/scarcity_generate/{dataset}/{subset}/{method}.log",
    benchmark:
        "benchmarks/out/scarcity_generate/{dataset}/{subset}/{method}.tsv"


rule scarcity:
    """The data-scarcity curve: detectors trained on n real training phantoms, without and
    with classical augmentation and with each labelled generator trained on the same n,
    scored on the held-out split (run on request)."""
    input:
        unpack(scarcity_inputs),
    output:
        csv="results/{dataset}/eval/scarcity.csv",
        json="results/{dataset}/eval/scarcity.json",
        md=report(
            "results/{dataset}/eval/scarcity.md",
            caption="../report/scarcity.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        png=report(
            "results/{dataset}/eval/scarcity.png",
            caption="../report/scarcity.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
    params:
        spec=scarcity_spec_json,
        generated=scarcity_generated_args,
        out_dir="results/{dataset}/eval",
    log:
        "logs/scarcity/{dataset}.log",
    benchmark:
        "benchmarks/out/scarcity/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=scarcity_mem_mb,
        runtime=scarcity_runtime,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models scarcity --spec {params.spec:q} --positron {input.positron:q}"
        " {params.generated} --out-dir {params.out_dir:q} --threads {threads} --overwrite"
        " 2> {log:q}"


rule scarcity_curve:
    """Run on request: `snakemake --cores 2 scarcity_curve` makes the data-scarcity curve of
    every selected dataset (the `scarcity` config section)."""
    input:
        scarcity_targets(),
