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

    # one experiment: figures/<stem>.{png,pdf} (suffix _beta<β> with several betas, and then faa_vs_beta too)
    rule figures:
        input:
            runs=all_run_metrics,
        output:
            **single_experiment_figures(),
            pdf=FIGURES_PDF,
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

    # several experiments: figures/<experiment>/beta<β>/<stem>.{png,pdf}
    rule figures:
        input:
            runs=experiment_beta_metrics,
        output:
            **experiment_beta_figures(),
            pdf=[figure_outputs(stem, "pdf") for stem in FIGURE_STEMS],
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

    localrules:
        beta_figure,
        paper_figure,

    # an experiment with several betas: FAA against beta, figures/<experiment>/faa_vs_beta.{png,pdf}
    rule beta_figure:
        input:
            runs=experiment_metrics,
        output:
            png=report(
                BETA_FIGURE_PATH.replace("{fmt}", "png"),
                caption="../report/faa_vs_beta.rst",
                category="Results",
                subcategory=FIGURE_CAPTIONS["faa_vs_beta"],
                labels={"experiment": "{experiment}"},
            ),
            pdf=BETA_FIGURE_PATH.replace("{fmt}", "pdf"),
        log:
            "logs/figures/{experiment}/faa_vs_beta.log",
        benchmark:
            "benchmarks/figures/{experiment}/faa_vs_beta.tsv"
        conda:
            "../envs/lorm.yaml"
        params:
            out_dir=figures_dir,
        shell:
            "MPLBACKEND=Agg python -m lorm figures --runs {input.runs} --out-dir {params.out_dir}"
            " --only faa_vs_beta > {log} 2>&1"

    # ours against the paper (one point per method x data set)
    rule paper_figure:
        input:
            csv=PAPER_CSV,
        output:
            png=report(
                PAPER_FIGURE_PATH.replace("{fmt}", "png"),
                caption="../report/paper_parity.rst",
                category="Results",
                subcategory="Paper comparison",
            ),
            pdf=PAPER_FIGURE_PATH.replace("{fmt}", "pdf"),
        log:
            "logs/figures/paper_parity.log",
        benchmark:
            "benchmarks/figures/paper_parity.tsv"
        conda:
            "../envs/lorm.yaml"
        params:
            stem=output_stem,
        shell:
            "MPLBACKEND=Agg python -m lorm paper-figure --csv {input.csv} --out-stem {params.stem}"
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


# `snakemake readme_results --cores 1` after a run of the default: copies the table's key columns and two figures
# with the run's provenance into docs/results/ (tracked) and into the README's results block (between its
# markers; README.md itself is edited in place, not declared as an output). Not part of `all`.
rule readme_results:
    input:
        table=TABLE_CSV,
        runs=all_run_metrics,
        figures=readme_figures,
    output:
        md=f"{README_RESULTS_DIR}/results.md",
        figures=[f"{README_RESULTS_DIR}/{stem}.png" for stem in README_FIGURES],
    log:
        "logs/readme_results/readme_results.log",
    benchmark:
        "benchmarks/readme_results/readme_results.tsv"
    conda:
        "../envs/lorm.yaml"
    params:
        out_dir=figures_dir,
        readme="README.md",
    shell:
        "python -m lorm.reporting.readme --table {input.table} --runs {input.runs} --figures {input.figures}"
        " --out-dir {params.out_dir} --readme {params.readme} > {log} 2>&1"
