rule system_matrix_2d:
    """Sparse 2D system matrix of a dataset's image grid, shared by its 2D reconstructions."""
    output:
        "results/{dataset}/recon/system_matrix_2d.h5",
    params:
        spec=recon_spec_json,
    log:
        "logs/system_matrix_2d/{dataset}.log",
    benchmark:
        "benchmarks/out/system_matrix_2d/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m recon system-matrix --spec {params.spec:q} --out {output:q} --overwrite"
        " --threads {threads} 2> {log:q}"


rule sensitivity_3d:
    """3D sensitivity image without attenuation (per scanner and grid), for 3D list mode."""
    output:
        "results/{dataset}/recon/sensitivity_3d.h5",
    params:
        spec=recon_spec_json,
    log:
        "logs/sensitivity_3d/{dataset}.log",
    benchmark:
        "benchmarks/out/sensitivity_3d/{dataset}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m recon sensitivity --spec {params.spec:q} --out {output:q} --overwrite"
        " --threads {threads} 2> {log:q}"


rule sensitivity_3d_attenuated:
    """3D sensitivity image through one phantom's mu map, for 3D list mode with attenuation."""
    input:
        phantom="results/{dataset}/phantoms/{phantom}.h5",
    output:
        "results/{dataset}/recon/{phantom}/_sensitivity_3d.h5",
    params:
        spec=recon_spec_json,
    log:
        "logs/sensitivity_3d_attenuated/{dataset}/{phantom}.log",
    benchmark:
        "benchmarks/out/sensitivity_3d_attenuated/{dataset}/{phantom}.tsv"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=240,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m recon sensitivity --spec {params.spec:q} --phantom-file {input.phantom:q}"
        " --out {output:q} --overwrite --threads {threads} 2> {log:q}"


rule reconstruct:
    """Reconstruct one acquisition of one phantom (2D SSRB + OSEM, or 3D list-mode OSEM)."""
    input:
        unpack(reconstruct_inputs),
    output:
        h5="results/{dataset}/recon/{phantom}/{acquisition}.h5",
        nifti="results/{dataset}/recon/{phantom}/{acquisition}.nii.gz",
        png=report(
            "results/{dataset}/recon/{phantom}/{acquisition}.png",
            caption="../report/recon.rst",
            category="Reconstruction",
            subcategory="{dataset}",
        ),
        defects="results/{dataset}/recon/{phantom}/{acquisition}_defects.json",
    params:
        spec=recon_spec_json,
        geometry=reconstruct_geometry_arg,
    log:
        "logs/reconstruct/{dataset}/{phantom}/{acquisition}.log",
    benchmark:
        "benchmarks/out/reconstruct/{dataset}/{phantom}/{acquisition}.tsv"
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


rule detectability:
    """Defect measures of every reconstruction of a dataset in one CSV, and the defect figure
    (truth and each acquisition on one windowing)."""
    input:
        detectability_inputs,
    output:
        csv="results/{dataset}/recon/detectability.csv",
        png=report(
            "results/{dataset}/recon/defects.png",
            caption="../report/defects.rst",
            category="Reconstruction",
            subcategory="{dataset}",
        ),
    log:
        "logs/detectability/{dataset}.log",
    benchmark:
        "benchmarks/out/detectability/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/recon.yaml"
    shell:
        "python -m recon detectability --defects {input:q} --out-csv {output.csv:q}"
        " --out-png {output.png:q} --overwrite 2> {log:q}"
