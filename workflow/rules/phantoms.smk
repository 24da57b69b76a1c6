rule phantom:
    """Draw and voxelise one phantom: HDF5 (materials, activity, mu511, labels), MetaImage
    copies for GATE and a PNG preview."""
    input:
        part=part_files,
    output:
        h5="results/{dataset}/phantoms/{phantom}.h5",
        png=report(
            "results/{dataset}/phantoms/{phantom}.png",
            caption="../report/phantom.rst",
            category="Simulation",
            subcategory="{dataset}",
        ),
        mhd=multiext(
            "results/{dataset}/phantoms/{phantom}",
            "_materials.mhd",
            "_materials.raw",
            "_activity.mhd",
            "_activity.raw",
            "_materials.txt",
        ),
    params:
        spec=phantom_spec_json,
    log:
        "logs/phantom/{dataset}/{phantom}.log",
    benchmark:
        "benchmarks/out/phantom/{dataset}/{phantom}.tsv"
    threads: 1
    resources:
        mem_mb=phantom_mem_mb,
        runtime=phantom_runtime,
    conda:
        "../envs/sim.yaml"
    shell:
        "python -m sim phantom --spec {params.spec:q} --out {output.h5} --overwrite 2> {log:q}"
