rule simulate_engine:
    """Simulate one acquisition with the engine named in the path (engine cross-check only;
    the main DAG uses the configured engine)."""
    input:
        unpack(simulate_inputs),
    output:
        "results/{dataset}/crosscheck/{phantom}/{acquisition}/{engine}.h5",
    params:
        spec=simulate_spec_json_for_engine,
        response=simulate_response_arg,
    log:
        "logs/simulate_engine/{dataset}/{phantom}/{acquisition}/{engine}.log",
    benchmark:
        "benchmarks/out/simulate_engine/{dataset}/{phantom}/{acquisition}/{engine}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=720,
    conda:
        "../envs/sim.yaml"
    shell:
        "python -m sim simulate --spec {params.spec:q} --phantom-file {input.phantom:q}"
        " --out {output:q} --threads {threads}{params.response} --overwrite 2> {log:q}"


rule crosscheck:
    """Compare two engines on one phantom and acquisition: table and plots."""
    input:
        a="results/{dataset}/crosscheck/{phantom}/{acquisition}/{engine_a}.h5",
        b="results/{dataset}/crosscheck/{phantom}/{acquisition}/{engine_b}.h5",
    output:
        md="results/{dataset}/crosscheck/{phantom}/{acquisition}/{engine_a}_vs_{engine_b}/crosscheck.md",
        csv="results/{dataset}/crosscheck/{phantom}/{acquisition}/{engine_a}_vs_{engine_b}/crosscheck.csv",
        png="results/{dataset}/crosscheck/{phantom}/{acquisition}/{engine_a}_vs_{engine_b}/crosscheck.png",
    log:
        "logs/crosscheck/{dataset}/{phantom}/{acquisition}/{engine_a}_vs_{engine_b}.log",
    resources:
        mem_mb=4000,
    conda:
        "../envs/sim.yaml"
    shell:
        "python -m sim crosscheck --a {input.a:q} --b {input.b:q}"
        " --out-dir $(dirname {output.md:q}) --overwrite 2> {log:q}"


rule engine_crosscheck:
    """Run on request: `snakemake --cores 2 engine_crosscheck` compares the engines of the
    config's `crosscheck` section (default: opengate as reference, fast)."""
    input:
        crosscheck_target(),
