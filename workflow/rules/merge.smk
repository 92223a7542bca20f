# The KnOTS merge benchmark (knots-spec sections 7-10): `snakemake merge_benchmark --cores all`.
#
# Separate from the FCIL runs: its own config (config key merge_benchmark, default config/merge.yaml, validated by
# lorm/schemas/mergebench.schema.yaml) and outputs under results/merge/<name>/, results/tables/merge.*,
# figures/merge/<name>/. One job per task (fine-tuning), one per method (greedy search on validation, one test
# evaluation), one for the CKA alignment, one for the report. Not part of `all`.

if MERGE is not None:

    localrules:
        merge_report,
        merge_benchmark,

    rule merge_finetune:
        output:
            f"{MERGE_DIR}/finetuned/{{task}}.pt",
        log:
            f"logs/merge/{MERGE_NAME}/finetune/{{task}}.log",
        benchmark:
            f"benchmarks/merge/{MERGE_NAME}/finetune/{{task}}.tsv"
        conda:
            "../envs/lorm.yaml"
        threads: MERGE["runtime"]["threads"]
        resources:
            gpu=merge_gpus,
        params:
            config=MERGE_CONFIG,
            settings=merge_settings(("seed", "tasks", "dataset", "model", "train")),
        shell:
            "python -m lorm.mergebench finetune --config {params.config} --task {wildcards.task}"
            " --out {output} --threads {threads} > {log} 2>&1"

    rule merge_method:
        input:
            finetuned=expand(f"{MERGE_DIR}/finetuned/{{task}}.pt", task=MERGE_TASKS),
        output:
            f"{MERGE_DIR}/methods/{{merge_method}}.json",
        log:
            f"logs/merge/{MERGE_NAME}/merge/{{merge_method}}.log",
        benchmark:
            f"benchmarks/merge/{MERGE_NAME}/merge/{{merge_method}}.tsv"
        conda:
            "../envs/lorm.yaml"
        threads: MERGE["runtime"]["threads"]
        resources:
            gpu=merge_gpus,
        params:
            config=MERGE_CONFIG,
            settings=merge_settings(("merge", "search", "joint", "metrics")),
        shell:
            "python -m lorm.mergebench merge --config {params.config} --method {wildcards.merge_method}"
            " --finetuned {input.finetuned} --out {output} --threads {threads} > {log} 2>&1"

    rule merge_alignment:
        input:
            finetuned=expand(f"{MERGE_DIR}/finetuned/{{task}}.pt", task=MERGE_TASKS),
        output:
            json=f"{MERGE_DIR}/alignment.json",
            png=report(
                f"{MERGE_FIGURES}/alignment.png",
                caption="../report/merge_alignment.rst",
                category="Merge benchmark",
            ),
            pdf=f"{MERGE_FIGURES}/alignment.pdf",
        log:
            f"logs/merge/{MERGE_NAME}/alignment.log",
        benchmark:
            f"benchmarks/merge/{MERGE_NAME}/alignment.tsv"
        conda:
            "../envs/lorm.yaml"
        threads: MERGE["runtime"]["threads"]
        params:
            config=MERGE_CONFIG,
            settings=merge_settings(("alignment",)),
        shell:
            "MPLBACKEND=Agg python -m lorm.mergebench alignment --config {params.config}"
            " --finetuned {input.finetuned} --out-json {output.json} --out-png {output.png}"
            " --threads {threads} > {log} 2>&1"

    rule merge_report:
        input:
            runs=expand(f"{MERGE_DIR}/methods/{{merge_method}}.json", merge_method=MERGE_METHODS),
            alignment=f"{MERGE_DIR}/alignment.json",
            paper="workflow/resources/paper-tables-knots.csv",
        output:
            md=report("results/tables/merge.md", caption="../report/merge_table.rst", category="Merge benchmark"),
            csv="results/tables/merge.csv",
            figure=report(
                f"{MERGE_FIGURES}/normalised_accuracy.png",
                caption="../report/merge_table.rst",
                category="Merge benchmark",
            ),
            figure_pdf=f"{MERGE_FIGURES}/normalised_accuracy.pdf",
        log:
            f"logs/merge/{MERGE_NAME}/report.log",
        benchmark:
            f"benchmarks/merge/{MERGE_NAME}/report.tsv"
        conda:
            "../envs/lorm.yaml"
        shell:
            "MPLBACKEND=Agg python -m lorm.mergebench report --runs {input.runs} --paper {input.paper}"
            " --alignment {input.alignment} --md {output.md} --csv {output.csv} --figure {output.figure}"
            " > {log} 2>&1"

    rule merge_benchmark:
        input:
            rules.merge_report.output,
            rules.merge_alignment.output,

else:

    rule merge_benchmark:
        log:
            "logs/merge/error.log",
        shell:
            f"echo {MERGE_SHELL_ERROR} >&2; exit 1"
