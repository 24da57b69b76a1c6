rule pretrain_vae:
    """The CT encoder (sec. 3.2): a VAE trained on the CT image set (transfer learning)."""
    input:
        ct="results/{dataset}/datasets/ct.h5",
    output:
        final="results/{dataset}/models/vae_ct/final.pt",
        history="results/{dataset}/models/vae_ct/history.csv",
        grid=report(
            "results/{dataset}/models/vae_ct/reconstructions.png",
            caption="../report/pretrain_vae.rst",
            category="Models",
            subcategory="{dataset}",
        ),
    params:
        spec=pretrain_vae_spec_json,
        out_dir="results/{dataset}/models/vae_ct",
    log:
        "logs/pretrain_vae/{dataset}.log",
    benchmark:
        "benchmarks/out/pretrain_vae/{dataset}.tsv"
    threads: train_threads
    resources:
        mem_mb=pretrain_vae_mem_mb,
        runtime=pretrain_vae_runtime,
        gpu=train_gpus,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models pretrain-vae --spec {params.spec:q} --ct {input.ct:q}"
        " --out-dir {params.out_dir:q} --threads {threads} --overwrite 2> {log:q}"


rule positron_features:
    """The positron feature memory (sec. 3.3): PCANet and PCA of the training images."""
    input:
        positron="results/{dataset}/datasets/positron.h5",
    output:
        "results/{dataset}/models/features.h5",
    params:
        spec=positron_features_spec_json,
    log:
        "logs/positron_features/{dataset}.log",
    benchmark:
        "benchmarks/out/positron_features/{dataset}.tsv"
    threads: train_threads
    # Before any training: the attention GAN's training waits for this feature memory, and
    # its chain (train, generate, evaluate) is the longest of the DAG.
    priority: 100000
    resources:
        mem_mb=positron_features_mem_mb,
        runtime=positron_features_runtime,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models positron-features --spec {params.spec:q} --positron {input.positron:q}"
        " --out {output:q} --threads {threads} --overwrite 2> {log:q}"


rule train:
    """Train one generative method by the shared loop; a killed run resumes from
    checkpoint.pt (kept in the folder, not a declared output)."""
    input:
        unpack(train_inputs),
    output:
        final="results/{dataset}/models/{method}/final.pt",
        history="results/{dataset}/models/{method}/history.csv",
        samples=report(
            "results/{dataset}/models/{method}/samples.png",
            caption="../report/train_samples.rst",
            category="Models",
            subcategory="{dataset}",
        ),
        losses=report(
            "results/{dataset}/models/{method}/losses.png",
            caption="../report/train_losses.rst",
            category="Models",
            subcategory="{dataset}",
        ),
    params:
        spec=train_spec_json,
        optional=train_input_args,
        out_dir="results/{dataset}/models/{method}",
    log:
        "logs/train/{dataset}/{method}.log",
    benchmark:
        "benchmarks/out/train/{dataset}/{method}.tsv"
    threads: train_threads
    priority: train_priority
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=train_gpus,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models train --spec {params.spec:q} --positron {input.positron:q}"
        " --ct {input.ct:q} {params.optional} --out-dir {params.out_dir:q}"
        " --threads {threads} --overwrite 2> {log:q}"


rule generate:
    """Sample a trained method: N images with the normalisation of positron.h5."""
    input:
        model="results/{dataset}/models/{method}/final.pt",
        positron="results/{dataset}/datasets/positron.h5",
        ct="results/{dataset}/datasets/ct.h5",
    output:
        "results/{dataset}/generated/{method}.h5",
    params:
        spec=generate_spec_json,
    log:
        "logs/generate/{dataset}/{method}.log",
    benchmark:
        "benchmarks/out/generate/{dataset}/{method}.tsv"
    threads: train_threads
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=train_gpus,
    conda:
        "../envs/models.yaml"
    shell:
        "python -m models generate --spec {params.spec:q} --model {input.model:q}"
        " --positron {input.positron:q} --ct {input.ct:q} --out {output:q}"
        " --threads {threads} --overwrite 2> {log:q}"
