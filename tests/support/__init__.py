"""Test support beyond the plugin (callgrid.testing): event subscriptions through ARM, as tests write them."""
