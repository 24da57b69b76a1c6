"""Phantoms from the user's parts (family ``part``): files, solids, placement, the family."""
