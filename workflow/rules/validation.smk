# Engine validation, run on request: `snakemake --cores 2 statistical_validation`
# (the `validation` config section; config/validation.yaml names the published phantoms).


rule simulate_realisation:
    """One noise realisation of one engine for the engine validation."""
    input:
        unpack(simulate_inputs),
    output:
        "results/{dataset}/validation/{phantom}/{acquisition}/{engine}/listmode_r{realisation}.h5",
    params:
        spec=realisation_spec_json,
        response=simulate_response_arg,
    log:
        "logs/simulate_realisation/{dataset}/{phantom}/{acquisition}/{engine}/r{realisation}.log",
    benchmark:
        "benchmarks/out/simulate_realisation/{dataset}/{phantom}/{acquisition}/{engine}/r{realisation}.tsv"
    threads: 2
    resources:
        mem_mb=simulate_mem_mb,
        runtime=simulate_runtime,
    conda:
        "../envs/sim.yaml"
    shell:
        "python -m sim simulate --spec {params.spec:q} --phantom-file {input.phantom:q}"
        " --out {output:q} --threads {threads}{params.response} --overwrite 2> {log:q}"


rule reconstruct_realisation:
    """Reconstruct one validation realisation as the dataset's images are reconstructed."""
    input:
        unpack(realisation_recon_inputs),
    output:
        h5="results/{dataset}/validation/{phantom}/{acquisition}/{engine}/recon_r{realisation}.h5",
        nifti="results/{dataset}/validation/{phantom}/{acquisition}/{engine}/recon_r{realisation}.nii.gz",
        png="results/{dataset}/validation/{phantom}/{acquisition}/{engine}/recon_r{realisation}.png",
        defects="results/{dataset}/validation/{phantom}/{acquisition}/{engine}/recon_r{realisation}_defects.json",
    params:
        spec=recon_spec_json,
        geometry=reconstruct_geometry_arg,
    log:
        "logs/reconstruct_realisation/{dataset}/{phantom}/{acquisition}/{engine}/r{realisation}.log",
    benchmark:
        "benchmarks/out/reconstruct_realisation/{dataset}/{phantom}/{acquisition}/{engine}/r{realisation}.tsv"
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


rule validate_phantom:
    """Compare two engines' realisations of one phantom: table and figure."""
    input:
        unpack(validate_phantom_inputs),
    output:
        md="results/{dataset}/validation/{phantom}/{acquisition}/{engine_a}_vs_{engine_b}/validation.md",
        csv="results/{dataset}/validation/{phantom}/{acquisition}/{engine_a}_vs_{engine_b}/validation.csv",
        png=report(
            "results/{dataset}/validation/{phantom}/{acquisition}/{engine_a}_vs_{engine_b}/validation.png",
            caption="../report/validation.rst",
            category="Engine validation",
            subcategory="{dataset}",
        ),
    log:
        "logs/validate_phantom/{dataset}/{phantom}/{acquisition}/{engine_a}_vs_{engine_b}.log",
    benchmark:
        "benchmarks/out/validate_phantom/{dataset}/{phantom}/{acquisition}/{engine_a}_vs_{engine_b}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m validation phantom --phantom-file {input.phantom:q}"
        " --reference-listmode {input.reference_listmode:q}"
        " --candidate-listmode {input.candidate_listmode:q}"
        " --reference-recon {input.reference_recon:q} --candidate-recon {input.candidate_recon:q}"
        " --out-dir $(dirname {output.md:q}) --overwrite 2> {log:q}"


rule statistical_validation:
    """Run on request: `snakemake --cores 2 statistical_validation` validates the engines of
    the config's `validation` section (default: the embedded Monte Carlo as reference, the
    statistical engine) on the first phantom of each listed dataset."""
    input:
        validation_tables,
    output:
        md=report(
            "results/validation/statistical.md",
            caption="../report/validation_summary.rst",
            category="Engine validation",
        ),
        csv="results/validation/statistical.csv",
    log:
        "logs/statistical_validation.log",
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m validation summary --tables {input:q} --out-md {output.md:q}"
        " --out-csv {output.csv:q} --overwrite 2> {log:q}"
