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
        mem_mb=feature_network_mem_mb,
        runtime=feature_network_runtime,
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
        class_walks=report(
            "results/{dataset}/eval/class_walks.png",
            caption="../report/eval_class_walks.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
        per_class="results/{dataset}/eval/table1_per_class.csv",
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


rule downstream:
    """Train on synthetic, test on real: defect detectors trained on the real images, on
    real plus each labelled method's images and on those alone, scored on real held-out
    images."""
    input:
        unpack(downstream_inputs),
    output:
        csv="results/{dataset}/eval/downstream.csv",
        json="results/{dataset}/eval/downstream.json",
        md=report(
            "results/{dataset}/eval/downstream.md",
            caption="../report/downstream.rst",
            category="Evaluation",
            subcategory="{dataset}",
        ),
    params:
        spec=downstream_spec_json,
        methods=downstream_method_args,
        out_dir="results/{dataset}/eval",
    log:
        "logs/downstream/{dataset}.log",
    benchmark:
        "benchmarks/out/downstream/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=downstream_mem_mb,
        runtime=downstream_runtime,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models downstream --spec {params.spec:q} --positron {input.positron:q}"
        " {params.methods} --out-dir {params.out_dir:q} --threads {threads} --overwrite"
        " 2> {log:q}"


rule enhance:
    """Enhancement of held-out low-count images: pix2pix against a tuned post-filter."""
    input:
        positron="results/{dataset}/datasets/positron.h5",
        model=f"results/{{dataset}}/models/{ENHANCE_METHOD}/final.pt",
    output:
        csv="results/{dataset}/enhance/enhance.csv",
        json="results/{dataset}/enhance/enhance.json",
        md=report(
            "results/{dataset}/enhance/enhance.md",
            caption="../report/enhance_table.rst",
            category="Enhancement",
            subcategory="{dataset}",
        ),
        png=report(
            "results/{dataset}/enhance/enhance.png",
            caption="../report/enhance_figure.rst",
            category="Enhancement",
            subcategory="{dataset}",
        ),
    params:
        spec=enhance_spec_json,
        out_dir="results/{dataset}/enhance",
    log:
        "logs/enhance/{dataset}.log",
    benchmark:
        "benchmarks/out/enhance/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models enhance --spec {params.spec:q} --positron {input.positron:q}"
        " --model {input.model:q} --out-dir {params.out_dir:q} --threads {threads} --overwrite"
        " 2> {log:q}"
