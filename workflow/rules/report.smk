# Results table and figures from the metrics files (cheap, local rules; read metrics JSON only).


rule table:
    input:
        runs=all_run_metrics,
    output:
        csv=report(
            TABLE_CSV,
            caption="../report/table.rst",
            category="Results",
            subcategory="Table",
        ),
        md=report(
            TABLE_MD,
            caption="../report/table.rst",
            category="Results",
            subcategory="Table",
        ),
    log:
        "logs/table/main.log",
    benchmark:
        "benchmarks/table/main.tsv"
    conda:
        "../envs/lorm.yaml"
    shell:
        "python -m lorm table --runs {input.runs} --csv {output.csv} --md {output.md}"
        " > {log} 2>&1"


rule figures:
    input:
        runs=all_run_metrics,
    output:
        per_task=report(
            FIGURES_PER_TASK,
            caption="../report/accuracy_per_task.rst",
            category="Results",
            subcategory="Accuracy per task",
        ),
        matrix=report(
            FIGURES_MATRIX,
            caption="../report/accuracy_matrix.rst",
            category="Results",
            subcategory="Accuracy matrix",
        ),
    log:
        "logs/figures/figures.log",
    benchmark:
        "benchmarks/figures/figures.tsv"
    conda:
        "../envs/lorm.yaml"
    params:
        out_dir=figures_dir,
    shell:
        "MPLBACKEND=Agg python -m lorm figures --runs {input.runs} --out-dir {params.out_dir}"
        " > {log} 2>&1"
