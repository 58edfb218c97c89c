"""Notifications: Slack (Block Kit), signed JSON webhooks and email, with retries."""
