"""The registry on disk: models, versions, manifests and serving configs."""
