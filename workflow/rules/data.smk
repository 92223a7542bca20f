# Data set and client partitions (cheap, local rules).


rule prepare_data:
    output:
        dataset=DATASET,
    log:
        "logs/prepare_data/{experiment}.log",
    benchmark:
        "benchmarks/prepare_data/{experiment}.tsv"
    conda:
        "../envs/lorm.yaml"
    params:
        config=RESOLVED_CONFIG,
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
        config=RESOLVED_CONFIG,
        split=partition_params,
    shell:
        "python -m lorm partition --config {params.config} --dataset {input.dataset}"
        " --beta {wildcards.beta} --seed {wildcards.seed} --out {output.partition}"
        " > {log} 2>&1"
