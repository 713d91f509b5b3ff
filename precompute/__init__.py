"""Offline jobs: ``python -m precompute train|features|lds|counterfactual|all --dataset D``."""
