"""Event Grid: topics, event subscriptions, filters, and durable delivery."""
