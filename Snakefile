# lorm: federated class-incremental learning with closed-form LoRA merging (LoRM) and baselines.
#
#   snakemake --cores all                               # config/config.yaml (offline, CPU, minutes)
#   snakemake --cores all --configfile config/my.yaml   # another experiment (see config/README.md)
#   snakemake --cores all --workflow-profile paper      # every LoRM setting of the paper (config/paper.yaml)
#   snakemake --profile profiles/slurm --workflow-profile paper   # the same on a SLURM cluster
#   snakemake -n                                        # plan only
#   snakemake --report results/report.zip               # HTML report of the finished run
#
# Pipeline, per experiment: prepare_data -> partition (beta x seed) -> run (method x seed x beta); then table,
# figures and, with several experiments (`experiments:` in the config), paper_table.
# The rules live in workflow/rules/; helper functions and targets in workflow/rules/common.smk.

from snakemake.utils import min_version

min_version("9.19")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/run.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/merge.smk"


# cheap rules never go to a cluster (prepare_data does: it decodes whole image data sets)
localrules:
    all,
    partition,
    table,
    claims,
    figures,
    paper_table,
    readme_results,


rule all:
    default_target: True
    input:
        final_targets,
