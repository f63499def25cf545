"""The ComponentResources: they wire the builders' manifests and the AWS resources together, with their
parents, providers, dependencies and outputs, and decide nothing of their own."""
