# Data set and client partitions.
#
# prepare_data decodes and resizes a whole image data set (in runtime.num_workers threads; minutes and several
# GB of memory for CIFAR-100 at 224 px), so on a cluster it is a job of its own (profiles/slurm gives it memory);
# partition is cheap and local. One data set per experiment: every path carries {experiment}, so each
# experiment is self-contained (at the price of one copy of the data per beta).


rule prepare_data:
    output:
        dataset=DATASET,
    log:
        "logs/prepare_data/{experiment}.log",
    benchmark:
        "benchmarks/prepare_data/{experiment}.tsv"
    conda:
        "../envs/lorm.yaml"
    threads: data_threads
    params:
        config=resolved_config,
        dataset=dataset_params,
    shell:
        "python -m lorm prepare-data --config {params.config} --out {output.dataset}"
        " > {log} 2>&1"


rule partition:
    input:
        dataset=DATASET,
    output:
        partition=PARTITION,
    log:
        "logs/partition/{experiment}/beta{beta}/seed{seed}.log",
    benchmark:
        "benchmarks/partition/{experiment}/beta{beta}/seed{seed}.tsv"
    conda:
        "../envs/lorm.yaml"
    params:
        config=resolved_config,
        split=partition_params,
    shell:
        "python -m lorm partition --config {params.config} --dataset {input.dataset}"
        " --beta {wildcards.beta} --seed {wildcards.seed} --out {output.partition}"
        " > {log} 2>&1"
