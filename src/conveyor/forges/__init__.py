"""Forges that send push webhooks (GitHub, GitLab, Gitea/Forgejo): one module each, registered
in conveyor.extensions."""
