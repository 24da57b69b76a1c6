rule calibrate_response:
    """The statistical engine's detector response, measured once per scanner with the
    embedded Monte Carlo."""
    output:
        "results/calibration/response.h5",
    params:
        spec=response_spec_json,
    log:
        "logs/calibrate_response.log",
    benchmark:
        "benchmarks/out/calibrate_response.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/sim.yaml"
    shell:
        "python -m sim calibrate-response --spec {params.spec:q} --out {output:q}"
        " --overwrite 2> {log:q}"


rule statistical_prep:
    """The statistical engine's per-phantom preparation (candidate lines, background
    sample), shared by the phantom's acquisitions and removed once they are simulated."""
    input:
        phantom="results/{dataset}/phantoms/{phantom}.h5",
    output:
        temp("results/{dataset}/statistical/{phantom}.h5"),
    params:
        spec=statistical_prep_spec_json,
    log:
        "logs/statistical_prep/{dataset}/{phantom}.log",
    benchmark:
        "benchmarks/out/statistical_prep/{dataset}/{phantom}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/sim.yaml"
    shell:
        "python -m sim prepare-statistical --spec {params.spec:q} --phantom-file"
        " {input.phantom:q} --out {output:q} --threads {threads} --overwrite 2> {log:q}"


rule simulate:
    """Simulate one acquisition of one phantom with the configured engine into a list-mode
    file (prompts with truth, delayed window), or a coincidence histogram (statistical
    engine)."""
    input:
        unpack(simulate_main_inputs),
    output:
        listmode_output("results/{dataset}/listmode/{phantom}/{acquisition}.h5"),
    params:
        spec=simulate_spec_json,
        response=simulate_main_args,
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
        " --out {output:q} --threads {threads}{params.response} --overwrite 2> {log:q}"
