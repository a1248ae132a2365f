"""The adapters: HTTP, the Kubernetes API, files, certificates, the reconciler loop and the CLI.
They read the world, call webhook.core, and write the answer back."""
