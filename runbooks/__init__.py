"""Shipped runbooks; a package only so that they install with evac."""
