# Detectability study, run on request: `snakemake --cores 2 detectability_study`
# (the `detectability_study` config section; config/detectability.yaml is the published one).


rule thin_level:
    """One phantom's study acquisition thinned to one count level (binomial thinning)."""
    input:
        "results/{dataset}/listmode/{phantom}/{acquisition}.h5",
    output:
        "results/{dataset}/detectability/l{level}/listmode/{phantom}/{acquisition}.h5",
    params:
        fraction=level_fraction,
        seed=level_seed,
    log:
        "logs/thin_level/{dataset}/l{level}/{phantom}/{acquisition}.log",
    benchmark:
        "benchmarks/out/thin_level/{dataset}/l{level}/{phantom}/{acquisition}.tsv"
    threads: 1
    resources:
        mem_mb=reconstruct_mem_mb,
        runtime=10,
    conda:
        "../envs/sim.yaml"
    shell:
        "python -m sim thin --in {input:q} --fraction {params.fraction} --seed {params.seed}"
        " --out {output:q} --overwrite 2> {log:q}"


rule reconstruct_level:
    """Reconstruct one count level as the dataset's images are reconstructed."""
    input:
        unpack(level_recon_inputs),
    output:
        h5="results/{dataset}/detectability/l{level}/recon/{phantom}/{acquisition}.h5",
        nifti="results/{dataset}/detectability/l{level}/recon/{phantom}/{acquisition}.nii.gz",
        png="results/{dataset}/detectability/l{level}/recon/{phantom}/{acquisition}.png",
        defects="results/{dataset}/detectability/l{level}/recon/{phantom}/{acquisition}_defects.json",
    params:
        spec=recon_spec_json,
        geometry=reconstruct_geometry_arg,
    log:
        "logs/reconstruct_level/{dataset}/l{level}/{phantom}/{acquisition}.log",
    benchmark:
        "benchmarks/out/reconstruct_level/{dataset}/l{level}/{phantom}/{acquisition}.tsv"
    threads: 2
    resources:
        mem_mb=reconstruct_mem_mb,
        runtime=reconstruct_runtime,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m recon reconstruct --spec {params.spec:q} --listmode {input.listmode:q}"
        " --phantom-file {input.phantom:q} {params.geometry} --out {output.h5:q} --overwrite"
        " --threads {threads} 2> {log:q}"


rule detectability_study:
    """Run on request: the smallest detected defect of each type against the counts, over
    every phantom of the `detectability_study` datasets and every count level."""
    input:
        unpack(detectability_study_inputs),
    output:
        md=report(
            "results/detectability/study.md",
            caption="../report/detectability_study.rst",
            category="Detectability study",
        ),
        png=report(
            "results/detectability/study.png",
            caption="../report/detectability_study.rst",
            category="Detectability study",
        ),
        csv="results/detectability/study.csv",
        smallest="results/detectability/smallest.csv",
    params:
        spec=detectability_study_spec_json,
        levels=detectability_study_levels,
    log:
        "logs/detectability_study.log",
    benchmark:
        "benchmarks/out/detectability_study.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m recon detectability-study --spec {params.spec:q} --recon {input.recon:q}"
        " --levels {params.levels} --out-dir $(dirname {output.md:q}) --overwrite 2> {log:q}"
