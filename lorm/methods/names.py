"""Method names without importing torch (for --help and config validation); the registry checks it."""

METHOD_NAMES = ("lorm", "lorm-a-only", "lorm-b-only", "fedavg-lora", "ffa-lora", "joint", "fedavg", "ewc", "lwf",
                "fisheravg", "regmean", "ccvr", "fedproto")
