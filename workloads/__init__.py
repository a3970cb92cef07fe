"""Built-in workloads, roles and models. They register with ``testbed.workload``'s registries on import."""
