"""Method names without importing torch (for --help and config validation); the registry checks it."""

METHOD_NAMES = ("lorm", "lorm-a-only", "lorm-b-only", "fedavg-lora", "ffa-lora", "joint", "fedavg", "ewc", "lwf",
                "fisheravg", "regmean", "ccvr", "fedproto", "ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties",
                "lorm-a-only-random-b", "pilora", "l2p", "coda-p", "target")

#: methods that fine-tune every parameter (no LoRA); they read the ``baselines`` section and, if it exists, the
#: section named like the method (ewc, lwf, regmean, ccvr, fedproto, target) instead of ``optim.lr*`` and ``lorm``
FULL_FINETUNING = ("fedavg", "ewc", "lwf", "fisheravg", "regmean", "ccvr", "fedproto", "target")

#: LoRA methods whose server merges the clients' updates with the model-merging family (task_merge section)
TASK_MERGE = ("ta", "ties", "dare-ties", "knots-ties", "knots-dare-ties")

#: prompt methods (frozen backbone + trained prompts and head) -> their config section; each reads only that
#: section (not optim, baselines, lorm or model.lora_*)
PROMPT_METHODS = {"l2p": "l2p", "coda-p": "coda"}
