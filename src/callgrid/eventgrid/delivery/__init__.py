"""Durable at-least-once delivery: the outbox engine, its HTTP sender, and the retry rules."""
