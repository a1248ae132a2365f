"""audit-webhook: admission webhook that makes kube-apiserver audit logging impossible to forget."""

__version__ = "0.1.0"
