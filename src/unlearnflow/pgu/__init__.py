"""Projected-Gradient Unlearning (Hoang et al., WACV 2024): the cached core gradient space
(:mod:`unlearnflow.pgu.gradient_space`) and the source-free unlearning step
(:mod:`unlearnflow.pgu.unlearn`)."""
