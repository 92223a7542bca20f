"""lorm: closed-form merging of parameter-efficient modules for federated continual learning."""

__version__ = "0.1.0"
