"""Evaluation metrics: margins, KLOM, accuracies, membership inference, U-LiRA."""
