# Results tables and figures from the metrics files (cheap, local rules; read metrics JSON only).


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


rule claims:
    input:
        runs=all_run_metrics,
    output:
        md=report(
            CLAIMS_MD,
            caption="../report/claims.rst",
            category="Results",
            subcategory="Claims",
        ),
        csv=report(
            CLAIMS_CSV,
            caption="../report/claims.rst",
            category="Results",
            subcategory="Claims",
        ),
    log:
        "logs/claims/claims.log",
    benchmark:
        "benchmarks/claims/claims.tsv"
    conda:
        "../envs/lorm.yaml"
    shell:
        "python -m lorm claims --runs {input.runs} --md {output.md} --csv {output.csv} > {log} 2>&1"


if not MULTI:

    # one experiment: figures/accuracy_per_task.png, figures/accuracy_matrix.png (suffix _beta<β> with
    # several betas)
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

else:

    # several experiments: figures/<experiment>/beta<β>/accuracy_{per_task,matrix}.png
    rule figures:
        input:
            runs=experiment_beta_metrics,
        output:
            per_task=report(
                EXPERIMENT_FIGURES_PER_TASK,
                caption="../report/accuracy_per_task.rst",
                category="Results",
                subcategory="Accuracy per task",
                labels={"experiment": "{experiment}", "beta": "{beta}"},
            ),
            matrix=report(
                EXPERIMENT_FIGURES_MATRIX,
                caption="../report/accuracy_matrix.rst",
                category="Results",
                subcategory="Accuracy matrix",
                labels={"experiment": "{experiment}", "beta": "{beta}"},
            ),
        log:
            "logs/figures/{experiment}/beta{beta}.log",
        benchmark:
            "benchmarks/figures/{experiment}/beta{beta}.tsv"
        conda:
            "../envs/lorm.yaml"
        params:
            out_dir=figures_dir,
        shell:
            "MPLBACKEND=Agg python -m lorm figures --runs {input.runs} --out-dir {params.out_dir}"
            " > {log} 2>&1"


# our numbers beside the paper's (workflow/resources/paper-table-lorm.csv), one table per beta; a target of
# `all` with several experiments (any single experiment can ask for results/tables/paper.md too)
rule paper_table:
    input:
        runs=all_run_metrics,
        paper=PAPER_REFERENCE,
    output:
        csv=report(
            PAPER_CSV,
            caption="../report/paper_table.rst",
            category="Results",
            subcategory="Paper comparison",
        ),
        md=report(
            PAPER_MD,
            caption="../report/paper_table.rst",
            category="Results",
            subcategory="Paper comparison",
        ),
    log:
        "logs/paper_table/paper.log",
    benchmark:
        "benchmarks/paper_table/paper.tsv"
    conda:
        "../envs/lorm.yaml"
    shell:
        "python -m lorm.reporting.paper --runs {input.runs} --paper {input.paper}"
        " --csv {output.csv} --md {output.md} > {log} 2>&1"
