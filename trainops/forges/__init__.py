"""Clients for code hosts (GitHub, GitLab, plain git), each behind the ``Forge`` protocol."""
