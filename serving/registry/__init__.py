"""The registry, on disk or in S3: models, versions, manifests and serving configs."""
