"""Compose deployment: rendering a plan into a docker-compose file (render.py), the images and their build scripts."""
