"""Submission engine: trace -> hash -> negotiate -> upload -> checkout. Never imports bpy."""
