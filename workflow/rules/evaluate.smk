rule feature_network:
    """The domain feature network of the metrics: a CNN trained on the real training split."""
    input:
        positron="results/{dataset}/datasets/positron.h5",
    output:
        final="results/{dataset}/models/feature_net/final.pt",
        metrics="results/{dataset}/models/feature_net/metrics.json",
    params:
        spec=feature_network_spec_json,
        out_dir="results/{dataset}/models/feature_net",
    log:
        "logs/feature_network/{dataset}.log",
    benchmark:
        "benchmarks/out/feature_network/{dataset}.tsv"
    threads: train_threads
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models feature-network --spec {params.spec:q} --positron {input.positron:q}"
        " --out-dir {params.out_dir:q} --threads {threads} --overwrite 2> {log:q}"


rule evaluate:
    """Table 1: every method against the real images, with sanity rows; figures."""
    input:
        unpack(evaluate_inputs),
    output:
        csv="results/{dataset}/eval/table1.csv",
        md=report(
            "results/{dataset}/eval/table1.md",
            caption="../report/table1.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        samples=report(
            "results/{dataset}/eval/samples.png",
            caption="../report/eval_samples.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        nearest=report(
            "results/{dataset}/eval/nearest.png",
            caption="../report/eval_nearest.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        walks=report(
            "results/{dataset}/eval/latent_walks.png",
            caption="../report/eval_walks.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        curves=report(
            "results/{dataset}/eval/curves.png",
            caption="../report/eval_curves.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
    params:
        spec=evaluate_spec_json,
        methods=evaluate_method_args,
        out_dir="results/{dataset}/eval",
    log:
        "logs/evaluate/{dataset}.log",
    benchmark:
        "benchmarks/out/evaluate/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models evaluate --spec {params.spec:q} --positron {input.positron:q}"
        " --ct {input.ct:q} --feature-net {input.feature_net:q} {params.methods}"
        " --out-dir {params.out_dir:q} --threads {threads} --overwrite 2> {log:q}"
