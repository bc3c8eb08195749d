"""The asset graph by stage: feature-target build, split, scalers, model, deployment."""
