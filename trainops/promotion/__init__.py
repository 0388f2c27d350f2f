"""Promotion: a model version that passed its gate goes to serving through Git.

``deploy_repo`` commits serving manifests to the deployment repository
(``environments/<env>/<model>/``) on a branch named after (model,
environment, version), pushes it and opens the pull request through the
Forge, or fast-forwards the target branch of a plain git deployment repo.
A rollback is a promotion of an older version, through the same path.
"""
