"""Evaluation: LDS (linear datamodeling score) and counterfactual retraining. Pure math here;
``precompute.evaluate`` orchestrates retraining and I/O."""
