# One federated (or joint) training run per experiment x method x seed x beta: the expensive jobs.
#
# gpu_slot (workflow/scripts/gpu_slot.py) reserves the job's GPU on a multi-GPU workstation (`--resources gpu=N`: each concurrent job
# gets its own device); it does nothing when the job needs no GPU or SLURM already chose the device.
# A killed job resumes from its last completed task (metrics.json.ckpt, written by `lorm run`).


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
    threads: run_threads
    resources:
        mem_mb=run_mem_mb,
        runtime=run_runtime,
        gpu=run_gpus,
    params:
        config=resolved_config,
        settings=run_params,
        device=run_device,
    shell:
        "python -m gpu_slot --gpus {resources.gpu} --device {params.device} --"
        " python -m lorm run --config {params.config} --method {wildcards.method}"
        " --seed {wildcards.seed} --beta {wildcards.beta}"
        " --dataset {input.dataset} --partition {input.partition}"
        " --out {output.metrics} --threads {threads} > {log} 2>&1"
