"""Compose deployment (rendering a plan into a docker-compose file, images): not implemented yet."""
