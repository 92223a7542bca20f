# One federated (or joint) training run per method x seed x beta: the expensive jobs.


rule run:
    input:
        dataset=DATASET,
        partition=PARTITION,
    output:
        metrics=METRICS,
    log:
        "logs/run/{experiment}/beta{beta}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/run/{experiment}/beta{beta}/{method}/seed{seed}.tsv"
    conda:
        "../envs/lorm.yaml"
    threads: RUN_THREADS
    resources:
        mem_mb=run_mem_mb,
        runtime=run_runtime,
        gpu=RUN_GPUS,
    params:
        config=RESOLVED_CONFIG,
        settings=run_params,
    shell:
        "python -m lorm run --config {params.config} --method {wildcards.method}"
        " --seed {wildcards.seed} --beta {wildcards.beta}"
        " --dataset {input.dataset} --partition {input.partition}"
        " --out {output.metrics} --threads {threads} > {log} 2>&1"
