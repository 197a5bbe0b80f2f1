"""Source-free certified unlearning of linear models (Ahmed et al., "Towards Source-Free Machine
Unlearning", building on Guo et al., "Certified Data Removal"): linear models on feature vectors
(:mod:`~unlearnflow.sourcefree.linear`), the source-free retain-Hessian estimate
(:mod:`~unlearnflow.sourcefree.hessian`), Newton removal (:mod:`~unlearnflow.sourcefree.newton`)
and its certificates (:mod:`~unlearnflow.sourcefree.certificate`)."""
