"""Evaluation: LDS (linear datamodeling score) and counterfactual retraining. Pure math here;
``precompute`` (``retrain``, ``lds``, ``ensemble``, ``counterfactual``) orchestrates retraining and I/O."""
