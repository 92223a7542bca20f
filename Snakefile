# lorm: federated class-incremental learning with closed-form LoRA merging (LoRM) and baselines.
#
#   snakemake --cores all                               # config/config.yaml (offline, CPU, minutes)
#   snakemake --cores all --configfile config/my.yaml   # another experiment (see config/README.md)
#   snakemake -n                                        # plan only
#   snakemake --report results/report.zip               # HTML report of the finished run
#
# Pipeline: prepare_data -> partition (beta x seed) -> run (method x seed x beta) -> table, figures.
# The rules live in workflow/rules/; helper functions and targets in workflow/rules/common.smk.

from snakemake.utils import min_version

min_version("9.19")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/run.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    prepare_data,
    partition,
    table,
    figures,


rule all:
    default_target: True
    input:
        final_targets,
