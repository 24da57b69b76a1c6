rule positron_dataset:
    """Cut the reconstructions of a dataset into 2D images: positron.h5 (paired low-count
    and reference slices, split by phantom) and a contact sheet."""
    input:
        positron_dataset_inputs,
    output:
        h5="results/{dataset}/datasets/positron.h5",
        png=report(
            "results/{dataset}/datasets/positron.png",
            caption="../report/positron_dataset.rst",
            category="Datasets",
            subcategory="{dataset}",
        ),
    params:
        spec=positron_dataset_spec_json,
    log:
        "logs/positron_dataset/{dataset}.log",
    benchmark:
        "benchmarks/out/positron_dataset/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m models positron-dataset --spec {params.spec:q}"
        " --results results/{wildcards.dataset} --out {output.h5:q} --overwrite 2> {log:q}"


rule ct_dataset:
    """Medical CT slices for transfer learning (a local DeepLesion, DICOM or NIfTI source,
    or synthetic CT-like slices): ct.h5 and a contact sheet."""
    output:
        h5="results/{dataset}/datasets/ct.h5",
        png=report(
            "results/{dataset}/datasets/ct.png",
            caption="../report/ct_dataset.rst",
            category="Datasets",
            subcategory="{dataset}",
        ),
    params:
        spec=ct_dataset_spec_json,
    log:
        "logs/ct_dataset/{dataset}.log",
    benchmark:
        "benchmarks/out/ct_dataset/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m models ct-dataset --spec {params.spec:q} --out {output.h5:q} --overwrite"
        " 2> {log:q}"
