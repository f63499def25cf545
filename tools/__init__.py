"""Command-line tools that run beside the Pulumi program: offline render and post-deploy verify."""
