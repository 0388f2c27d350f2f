"""Manifests trainops writes for clusters: pure builders and checked templates.

- ``serving.py``: the KServe ``InferenceService`` that serves a registered
  MLflow model version, and the ``kustomization.yaml`` files of the
  deployment repository (``environments/<env>/<model>/``). The
  ``InferenceService`` comes from a Jinja2 template a team may override
  (sandboxed, ``StrictUndefined``, every value through ``| tojson``); the
  output is parsed back, validated and re-dumped with every string
  double-quoted, so Go tools read a short sha as a string. Errors are
  ``serving.ManifestError``.

Nothing here talks to a cluster, MLflow or a forge: values in, text out.
"""
