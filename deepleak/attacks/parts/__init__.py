"""The objective parts the recipes compose: gradient distances, image priors, group consistency, lr schedulers, and their declared interfaces."""
