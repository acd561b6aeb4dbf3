"""The job system: limits at submit, the durable fair queue, the GPU worker and its events."""
