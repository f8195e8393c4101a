"""Deployment files (node image, MLflow server, Kubernetes manifests) and the local stack for development."""
