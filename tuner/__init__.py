"""The search service: ``python -m tuner.search`` runs an Optuna search on Ray Tune."""
