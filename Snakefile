from snakemake.utils import min_version

min_version("9.0")


# A study given with --configfile replaces the demo study instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/slices.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/validation.smk"


onsuccess:
    stop_rescheduling_timers()


onerror:
    stop_rescheduling_timers()


rule all:
    input:
        final_outputs(),
