rule simulate:
    """Simulate one acquisition of one phantom with the configured engine into a list-mode
    file (prompts with truth, delayed window)."""
    input:
        phantom="results/{dataset}/phantoms/{phantom}.h5",
    output:
        listmode_output("results/{dataset}/listmode/{phantom}/{acquisition}.h5"),
    params:
        spec=simulate_spec_json,
    log:
        "logs/simulate/{dataset}/{phantom}/{acquisition}.log",
    benchmark:
        "benchmarks/out/simulate/{dataset}/{phantom}/{acquisition}.tsv"
    threads: 2
    resources:
        mem_mb=simulate_mem_mb,
        runtime=simulate_runtime,
    conda:
        "../envs/sim.yaml"
    shell:
        "python -m sim simulate --spec {params.spec:q} --phantom-file {input.phantom:q}"
        " --out {output:q} --threads {threads} --overwrite 2> {log:q}"
